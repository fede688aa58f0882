//! The server's base URL, split into what a request needs: the address to connect to,
//! the `Host` header, and the path prefix (`/v1`).

use super::OpenAiError;

/// A parsed `openai.endpoint` (`http://host[:port][/prefix]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As configured, for messages and the result.
    pub url: String,
    /// `host:port` to connect to (port 80 when the URL has none).
    pub connect_addr: String,
    /// The `Host` header: the URL's authority as written.
    pub host_header: String,
    /// Path prefix without a trailing slash (`/v1`, or empty).
    pub base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, OpenAiError> {
        lem_common::config::validate::check_endpoint(url).map_err(|why| OpenAiError::Endpoint {
            endpoint: url.to_string(),
            message: why,
        })?;
        let rest = &url["http://".len()..];
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // A port follows the last `:` outside an IPv6 literal's brackets.
        let host_end = authority.rfind(']').map_or(0, |i| i + 1);
        let has_port = authority[host_end..].contains(':');
        let connect_addr = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            url: url.to_string(),
            connect_addr,
            host_header: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The request path of an API route (`completions` → `/v1/completions`).
    pub fn path(&self, route: &str) -> String {
        format!("{}/{route}", self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_address_host_and_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:8000/v1/").unwrap();
        assert_eq!(e.connect_addr, "127.0.0.1:8000");
        assert_eq!(e.host_header, "127.0.0.1:8000");
        assert_eq!(e.path("completions"), "/v1/completions");
        let e = Endpoint::parse("http://localhost").unwrap();
        assert_eq!(e.connect_addr, "localhost:80");
        assert_eq!(e.path("models"), "/models");
        let e = Endpoint::parse("http://[::1]/openai/v1").unwrap();
        assert_eq!(e.connect_addr, "[::1]:80");
        assert_eq!(e.path("models"), "/openai/v1/models");
        let e = Endpoint::parse("http://[::1]:9/v1").unwrap();
        assert_eq!(e.connect_addr, "[::1]:9");
    }

    #[test]
    fn a_bad_endpoint_is_an_error_naming_it() {
        let e = Endpoint::parse("https://h/v1").unwrap_err().to_string();
        assert!(
            e.contains("openai.endpoint: `https://h/v1`: https is not supported"),
            "{e}"
        );
    }
}
