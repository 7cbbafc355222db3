//! Request-path normalization as Envoy does it under Istio's MeshConfig
//! `pathNormalization` (istio.io "Authorization Policy Normalization"): the
//! normalized path is what routing, authorization, metrics and the app see,
//! so `/public/../admin`, `/./admin` and `/%61dmin` are all `/admin` before
//! any rule looks at them.
//!
//! In order: `%2F`/`%5C` decoded (DECODE_AND_MERGE_SLASHES only); percent-encoded
//! unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded and every other
//! escape's hex upper-cased; `\` becomes `/`; dot segments removed (RFC 3986
//! 5.2.4, never above the root); then `//` merged (MERGE_SLASHES and
//! DECODE_AND_MERGE_SLASHES). `%00`, a broken escape, or a path that is not
//! absolute is refused (400). The query is never touched. Case is kept, as in
//! Istio (`/Admin` is not `/admin`).

use weft_model::PathNormalization;

/// Why a path cannot be normalized (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Nul,
    BadEscape,
    NotAbsolute,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Nul => "path contains %00",
            Refused::BadEscape => "path contains a malformed percent-escape",
            Refused::NotAbsolute => "path does not start with /",
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes `path_and_query` (origin form) under `mode`; the query is kept as it came.
pub fn normalize(path_and_query: &str, mode: PathNormalization) -> Result<String, Refused> {
    normalized(path_and_query, mode).map(std::borrow::Cow::into_owned)
}

/// [`normalize`], borrowing when the path is normal already (most are: no
/// allocation on the request path then).
pub(crate) fn normalized(path_and_query: &str, mode: PathNormalization) -> Result<std::borrow::Cow<'_, str>, Refused> {
    use std::borrow::Cow;
    if mode == PathNormalization::None {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let merge = matches!(mode, PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes);
    let needs_work = !path.starts_with('/')
        || path.bytes().any(|b| b == b'%' || b == b'\\')
        || path.contains("/.")
        || (merge && path.contains("//"));
    if !needs_work {
        return Ok(Cow::Borrowed(path_and_query));
    }
    if !path.starts_with('/') && !path.starts_with('\\') {
        return Err(Refused::NotAbsolute);
    }
    let decode_slashes = mode == PathNormalization::DecodeAndMergeSlashes;
    // 1 and 2: escapes, one pass (no double decoding), and backslashes.
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
                else {
                    return Err(Refused::BadEscape);
                };
                let c = h * 16 + l;
                match c {
                    0 => return Err(Refused::Nul),
                    b'/' | b'\\' if decode_slashes => out.push(b'/'),
                    c if unreserved(c) => out.push(c),
                    _ => {
                        out.push(b'%');
                        out.extend_from_slice(format!("{c:02X}").as_bytes());
                    }
                }
                i += 3;
            }
            b'\\' => {
                out.push(b'/');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // 3: dot segments (RFC 3986 5.2.4), on whole segments only.
    let text = String::from_utf8(out).map_err(|_| Refused::BadEscape)?;
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = text[1..].split('/').collect();
    let last = parts.len() - 1;
    for (n, seg) in parts.iter().enumerate() {
        match *seg {
            "." => {
                if n == last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if n == last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len() + query.len());
    out.push('/');
    out.push_str(&segments.join("/"));
    if merge {
        while out.contains("//") {
            out = out.replace("//", "/");
        }
    }
    out.push_str(query);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathNormalization::*;

    fn n(p: &str, m: PathNormalization) -> String {
        normalize(p, m).unwrap()
    }

    #[test]
    fn istios_examples() {
        assert_eq!(n("/a/../b", Base), "/b");
        assert_eq!(n("\\da", Base), "/da");
        assert_eq!(n("/a//b", Base), "/a//b");
        assert_eq!(n("/a//b", MergeSlashes), "/a/b");
        assert_eq!(n("/a/.//../b", MergeSlashes), "/a/b", "dot segments first, then slashes merged (Envoy's order)");
        assert_eq!(n("/a%2fb", MergeSlashes), "/a%2Fb");
        assert_eq!(n("/a%2fb", DecodeAndMergeSlashes), "/a/b");
        assert_eq!(n("/a%5Cb", DecodeAndMergeSlashes), "/a/b");
        assert_eq!(n("../%2Fa../b", None), "../%2Fa../b");
    }

    #[test]
    fn the_bypasses_of_a_deny_on_admin_all_become_admin() {
        for p in [
            "/public/../admin/x",
            "/./admin/x",
            "/%61dmin/x",
            "/%2e%2e/admin/x",
            "/public/%2E%2E/admin/x",
            "/a/b/../../admin/x",
            "\\admin\\x",
            "/public/..%5Cadmin/x",
        ] {
            let got = n(p, Base);
            assert!(got == "/admin/x" || got == "/public/..%5Cadmin/x", "{p} → {got}");
        }
        assert_eq!(n("/public/..%5Cadmin/x", DecodeAndMergeSlashes), "/admin/x");
    }

    #[test]
    fn never_above_the_root_and_the_query_untouched() {
        assert_eq!(n("/../../../etc/passwd", Base), "/etc/passwd");
        assert_eq!(n("/a/..", Base), "/");
        assert_eq!(n("/a/.", Base), "/a/");
        assert_eq!(n("/a/b/..?x=/../y&z=%61", Base), "/a/?x=/../y&z=%61");
        assert_eq!(n("/", Base), "/");
        assert_eq!(n("/Admin", Base), "/Admin", "case is kept");
        assert_eq!(n("/%7e%41%2d", Base), "/~A-");
        assert_eq!(n("/%3a%3F", Base), "/%3A%3F", "reserved escapes stay, hex upper-cased");
    }

    #[test]
    fn what_cannot_be_normalized_is_refused() {
        assert_eq!(normalize("/a%00b", Base), Err(Refused::Nul));
        assert_eq!(normalize("/a%zzb", Base), Err(Refused::BadEscape));
        assert_eq!(normalize("/a%4", Base), Err(Refused::BadEscape));
        assert_eq!(normalize("a/b", Base), Err(Refused::NotAbsolute));
        assert_eq!(normalize("/%c3%28", Base), Ok("/%C3%28".into()), "non-UTF-8 escapes stay escaped");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let samples = ["/a/./b/../c//d", "/%2e/%2E%2e/x", "/q?a=%2e", "/a%2F..%2Fb", "/x/y/z/../../..", "/~%7E/%41"];
        for p in samples {
            for m in [Base, MergeSlashes, DecodeAndMergeSlashes] {
                let once = n(p, m);
                assert_eq!(n(&once, m), once, "{p} under {m:?}");
                assert!(!once.split('?').next().unwrap().split('/').any(|s| s == ".." || s == "."), "{once}");
            }
        }
    }
}
