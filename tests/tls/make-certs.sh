#!/usr/bin/env bash
# Generates every certificate the TLS tests use, with openssl, into OUTDIR (created if needed).
#
#   bash tests/tls/make-certs.sh OUTDIR
#
# Nothing here is committed: tests/python/test_tls*.py runs this once per session into a temp dir.
# Needs OpenSSL 1.1.1+ (3.x for the -legacy PKCS#12). Takes well under a second or two.
#
# Files (CERT.crt + CERT.key unless noted; "localhost SANs" = DNS:localhost, IP:127.0.0.1, IP:::1):
#   ca                  test CA (ECDSA P-256), CN=Kestrel Test CA; trusts every server/client cert below
#   other-ca            a second CA that nothing trusts, CN=Kestrel Other CA
#   localhost-ec        ECDSA P-256, CN=localhost-ec, localhost SANs
#   localhost-rsa       RSA 2048, CN=localhost-rsa, localhost SANs
#   localhost-ed25519   Ed25519, CN=localhost-ed25519, localhost SANs
#   localhost-new       ECDSA P-256, CN=localhost-new, localhost SANs (the "replacement" for reloads)
#   default             ECDSA P-256, CN=kestrel-default, SANs default.test + localhost SANs
#   a-example           ECDSA P-256, CN=a.example.com, DNS:a.example.com
#   wildcard-example    ECDSA P-256, CN=wildcard.example.com, DNS:*.example.com
#   server-expired      ECDSA P-256, CN=localhost-expired, localhost SANs, valid 2020-01-01..2021-01-01
#   client              client cert CN=alice, O=Example (clientAuth), issued by ca
#   client-expired      client cert CN=old-alice, O=Example, issued by ca, expired (2020..2021)
#   client-untrusted    client cert CN=mallory, O=Elsewhere, issued by other-ca
#   mismatch.key        an ECDSA P-256 key that matches no certificate
#   localhost-ec-encrypted.key  localhost-ec.key encrypted (AES-256, password "key-secret")
#   garbage.pem         random text, not PEM
#   localhost-rsa.pfx   PKCS#12 of localhost-rsa (+ CA), password "pfx-secret" (AES, OpenSSL 3 default)
#   localhost-rsa-legacy.pfx  the same with -legacy (RC2/3DES, SHA-1 MAC), if this openssl can
set -euo pipefail

OUT="${1:?usage: make-certs.sh OUTDIR}"
mkdir -p "$OUT"
cd "$OUT"

PFX_PASSWORD="pfx-secret"
LOCAL_SANS="DNS:localhost,IP:127.0.0.1,IP:::1"

newkey() { # newkey FILE ec|rsa|ed25519
    case "$2" in
        ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ;;
        rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
        ed25519) openssl genpkey -algorithm ED25519 -out "$1" ;;
    esac
}

make_ca() { # make_ca NAME CN
    newkey "$1.key" ec
    openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$1.crt"
}

# sign NAME KEYTYPE SUBJECT EXTENSIONS [CA]: key + CSR, then a certificate valid for 825 days.
sign() {
    local name="$1" type="$2" subj="$3" ext="$4" ca="${5:-ca}"
    newkey "$name.key" "$type"
    openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
    printf '%s\n' "$ext" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 825 \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
}

# sign_past NAME KEYTYPE SUBJECT EXTENSIONS: like sign, but valid only 2020-01-01..2021-01-01
# (openssl ca takes explicit dates on every OpenSSL version; x509 -not_after needs 3.4+).
sign_past() {
    local name="$1" type="$2" subj="$3" ext="$4"
    newkey "$name.key" "$type"
    openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
    printf '%s\n' "$ext" >"$name.ext"
    mkdir -p ca-db
    : >ca-db/index.txt
    [[ -f ca-db/serial ]] || echo 1000 >ca-db/serial
    cat >ca-db/ca.cnf <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = any_policy
unique_subject = no
email_in_dn = no
[ any_policy ]
commonName = supplied
organizationName = optional
EOF
    openssl ca -batch -config ca-db/ca.cnf -cert ca.crt -keyfile ca.key -in "$name.csr" -out "$name.crt" \
        -startdate 20200101000000Z -enddate 20210101000000Z -extfile "$name.ext" -notext 2>/dev/null
}

SERVER_EXT="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
CLIENT_EXT="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

make_ca ca "Kestrel Test CA"
make_ca other-ca "Kestrel Other CA"

sign localhost-ec ec "/CN=localhost-ec" "$SERVER_EXT
subjectAltName=$LOCAL_SANS"
sign localhost-rsa rsa "/CN=localhost-rsa" "$SERVER_EXT
subjectAltName=$LOCAL_SANS"
# Ed25519 keys only sign: no keyEncipherment.
sign localhost-ed25519 ed25519 "/CN=localhost-ed25519" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$LOCAL_SANS"
sign localhost-new ec "/CN=localhost-new" "$SERVER_EXT
subjectAltName=$LOCAL_SANS"
sign default ec "/CN=kestrel-default" "$SERVER_EXT
subjectAltName=DNS:default.test,$LOCAL_SANS"
sign a-example ec "/CN=a.example.com" "$SERVER_EXT
subjectAltName=DNS:a.example.com"
sign wildcard-example ec "/CN=wildcard.example.com" "$SERVER_EXT
subjectAltName=DNS:*.example.com"
sign_past server-expired ec "/CN=localhost-expired" "$SERVER_EXT
subjectAltName=$LOCAL_SANS"

sign client ec "/CN=alice/O=Example" "$CLIENT_EXT"
sign_past client-expired ec "/CN=old-alice/O=Example" "$CLIENT_EXT"
sign client-untrusted ec "/CN=mallory/O=Elsewhere" "$CLIENT_EXT" other-ca

newkey mismatch.key ec
openssl pkey -in localhost-ec.key -aes256 -passout pass:key-secret -out localhost-ec-encrypted.key
printf 'this is not a certificate\n%s\n' "$(head -c 300 /dev/urandom | od -An -tx1 | tr -d ' \n')" >garbage.pem

openssl pkcs12 -export -in localhost-rsa.crt -inkey localhost-rsa.key -certfile ca.crt \
    -name localhost-rsa -passout "pass:$PFX_PASSWORD" -out localhost-rsa.pfx
if openssl pkcs12 -help 2>&1 | grep -q -- '-legacy'; then
    openssl pkcs12 -export -legacy -in localhost-rsa.crt -inkey localhost-rsa.key -certfile ca.crt \
        -name localhost-rsa -passout "pass:$PFX_PASSWORD" -out localhost-rsa-legacy.pfx 2>/dev/null \
        || rm -f localhost-rsa-legacy.pfx
fi

# Self-checks: the chains verify, and the "expired" ones really are expired.
for c in localhost-ec localhost-rsa localhost-ed25519 localhost-new default a-example wildcard-example client; do
    openssl verify -CAfile ca.crt "$c.crt" >/dev/null
done
openssl verify -CAfile other-ca.crt client-untrusted.crt >/dev/null
for c in server-expired client-expired; do
    if openssl x509 -in "$c.crt" -noout -checkend 0 >/dev/null; then
        echo "make-certs.sh: $c.crt is not expired" >&2
        exit 1
    fi
done
rm -f ./*.csr ./*.ext ./*.srl
rm -rf ca-db
