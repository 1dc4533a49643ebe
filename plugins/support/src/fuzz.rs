//! Turning fuzzer bytes into a request, for the providers' fuzz targets
//! (`fuzz/`) and the tests that replay their corpus.
//!
//! Layout: lines up to the first empty line are the head: `name: value`
//! is a header, a line starting with `?` the query, one starting with `/`
//! the path, one starting with `@` the method (`@GET`; POST when none);
//! everything after the empty line is the body.

use switchyard_plugin_api::Request;

/// A request decoded from fuzzer bytes, owning its parts.
#[derive(Debug, Default)]
pub struct FuzzRequest {
    pub method: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub query: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl FuzzRequest {
    pub fn parse(data: &[u8]) -> FuzzRequest {
        let mut out = FuzzRequest::default();
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (&[][..], data),
        };
        out.body = body.to_vec();
        for line in head.split(|b| *b == b'\n') {
            let text = String::from_utf8_lossy(line);
            if let Some(m) = text.strip_prefix('@') {
                out.method = m.trim().chars().take(16).collect();
            } else if let Some(q) = text.strip_prefix('?') {
                out.query = q.to_string();
            } else if text.starts_with('/') {
                out.path = text.into_owned();
            } else if let Some(i) = line.iter().position(|b| *b == b':') {
                let name = String::from_utf8_lossy(&line[..i]).trim().to_string();
                let value = line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]);
                out.headers.push((name, value.to_vec()));
            }
        }
        out
    }

    /// Runs `f` with a borrowed [`Request`] over these parts.
    pub fn with<R>(&self, f: impl FnOnce(&Request<'_>) -> R) -> R {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        f(&Request {
            method: if self.method.is_empty() {
                "POST"
            } else {
                &self.method
            },
            path: &self.path,
            query: &self.query,
            headers: &headers,
            remote_addr: "127.0.0.1",
            body: &self.body,
        })
    }
}

/// Runs `f` over every file of `dir` (a saved corpus), if it exists;
/// returns how many files ran.
pub fn replay_dir(dir: &std::path::Path, mut f: impl FnMut(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if let Ok(data) = std::fs::read(&path) {
            f(&data);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body() {
        let r = FuzzRequest::parse(b"X-A: 1\n?token=t\n/p/q\nbroken\n\n{\"a\":1}\n\n");
        assert_eq!(r.headers, vec![("X-A".to_string(), b"1".to_vec())]);
        assert_eq!(r.query, "token=t");
        assert_eq!(r.path, "/p/q");
        assert_eq!(r.body, b"{\"a\":1}\n\n");
        assert!(r.with(|req| req.method == "POST"));
        let r = FuzzRequest::parse(b"just a body");
        assert_eq!(r.body, b"just a body");
        assert!(r.with(|req| req.header("x").is_none()));
        let r = FuzzRequest::parse(
            b"@OPTIONS
?challenge=x

",
        );
        assert!(r.with(|req| req.method == "OPTIONS" && req.query == "challenge=x"));
    }
}
