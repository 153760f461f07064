//! Choosing a certificate by SNI name: exact names first, then one-label wildcards
//! (`*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`), then the
//! default certificate.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Checks and normalises (lower case, no trailing dot) a name pattern given by the host.
pub(super) fn check_pattern(name: &str) -> Result<String> {
    let bad = |why: &str| Error::InvalidArgument(format!("SNI name {name:?}: {why}"));
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name.as_str()),
    };
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if wildcard && !rest.contains('.') {
        return Err(bad("a wildcard needs at least two labels after '*.'"));
    }
    for label in rest.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(bad(
                "not a host name (letters, digits, '-', dots; '*.' only as the first label)",
            ));
        }
    }
    Ok(name)
}

/// Name → certificate index lookup for one endpoint.
#[derive(Debug, Default)]
pub(super) struct SniMap {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

impl SniMap {
    /// Builds the map from each certificate's names (already checked by [`check_pattern`]). The
    /// first certificate to claim a name wins.
    pub(super) fn new<'a>(names: impl Iterator<Item = &'a [String]>) -> Self {
        let mut map = SniMap::default();
        for (index, names) in names.enumerate() {
            if names.is_empty() {
                map.default.get_or_insert(index);
            }
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => map.wildcard.entry(suffix.to_owned()).or_insert(index),
                    None => map.exact.entry(name.clone()).or_insert(index),
                };
            }
        }
        map
    }

    /// The certificate for a client's SNI name (or its absence), if any.
    pub(super) fn pick(&self, server_name: Option<&str>) -> Option<usize> {
        let Some(name) = server_name else {
            return self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(&i) = self.wildcard.get(parent) {
                return Some(i);
            }
        }
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|n| n.iter().map(|s| check_pattern(s).unwrap()).collect())
            .collect()
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let n = names(&[&["a.example.com"], &["*.example.com"], &[]]);
        let map = SniMap::new(n.iter().map(Vec::as_slice));
        assert_eq!(map.pick(Some("a.example.com")), Some(0));
        assert_eq!(map.pick(Some("A.Example.COM.")), Some(0));
        assert_eq!(map.pick(Some("b.example.com")), Some(1));
        assert_eq!(map.pick(Some("x.b.example.com")), Some(2));
        assert_eq!(map.pick(Some("example.com")), Some(2));
        assert_eq!(map.pick(None), Some(2));
    }

    #[test]
    fn no_default_means_no_certificate() {
        let n = names(&[&["*.example.com"]]);
        let map = SniMap::new(n.iter().map(Vec::as_slice));
        assert_eq!(map.pick(Some("other.org")), None);
        assert_eq!(map.pick(None), None);
    }

    #[test]
    fn bad_patterns() {
        for bad in ["", "*", "*.com", "a..b", "a.*.b", "-a.b", "a b", "**.a.b"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_pattern("WWW.Example.com.").unwrap(),
            "www.example.com"
        );
    }
}
