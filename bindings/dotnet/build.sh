#!/usr/bin/env bash
# Builds the .NET binding with Mono's mcs, warnings as errors, into target/dotnet/:
#   Kestrel.Native.dll (+ Kestrel.Native.dll.config, its Mono DllImport map), Hello.exe, and
#   KestrelTests.exe. Installs Mono from Debian's packages first if it is missing.
#
#   bindings/dotnet/build.sh            prints the output directory on stdout
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/target/dotnet
MONO_LIB=/usr/lib/mono/4.5

# The smallest set that suffices: mcs and the runtime bring mscorlib (which has Span<T>,
# Memory<T>, MemoryMarshal and MemoryManager<T> in Mono 6.8, so no System.Memory package is
# needed), System and System.Core; the tests also use System.Net.Http (HttpClient).
if ! command -v mcs >/dev/null || ! command -v mono >/dev/null || [[ ! -f $MONO_LIB/System.Net.Http.dll ]]; then
    echo "[dotnet] installing Mono (mono-mcs, mono-runtime, libmono-system-net-http4.0-cil)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mono-mcs mono-runtime libmono-system-net-http4.0-cil >/dev/null
fi

mkdir -p "$OUT"
MCS=(mcs -warnaserror -warn:4 -debug -nologo)
"${MCS[@]}" -target:library -unsafe -doc:"$OUT/Kestrel.Native.xml" -out:"$OUT/Kestrel.Native.dll" "$HERE"/src/*.cs
cp "$HERE/src/Kestrel.Native.dll.config" "$OUT/"
"${MCS[@]}" -r:"$OUT/Kestrel.Native.dll" -out:"$OUT/Hello.exe" "$HERE/examples/Hello.cs"
"${MCS[@]}" -unsafe -r:"$OUT/Kestrel.Native.dll" -r:System.Net.Http.dll \
    -out:"$OUT/KestrelTests.exe" "$HERE"/tests/*.cs
echo "$OUT"
