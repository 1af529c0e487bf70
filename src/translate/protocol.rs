//! Which protocol a service port speaks: one rule shared by CDS (HTTP/2 upstreams) and LDS
//! (HTTP connection manager or TCP proxy), so a port is never HTTP for one and TCP for the other.
//!
//! Istio's rule (`ConvertProtocol`) with one documented difference: a port Istio would sniff
//! (unknown name, no `appProtocol`) is plain TCP here.

use crate::catalog::ServicePort;

/// What a service port carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 (HTTP/2 with prior knowledge is accepted downstream too).
    Http,
    /// HTTP/2: `http2`, gRPC and gRPC-Web; upstream clusters speak HTTP/2.
    Http2,
    /// Opaque TCP: everything else, including TLS and HTTPS (passed through untouched).
    Tcp,
}

impl Protocol {
    /// Whether the port gets an HTTP connection manager (HTTP or HTTP/2).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2)
    }

    /// Upper-case name, as Istio writes protocols (for conflict reports).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Tcp => "TCP",
        }
    }
}

/// The protocol of `port`: `appProtocol` wins (even an unknown one), else the port name.
/// Either is read case-insensitively up to its first `-`: `http` is HTTP; `http2`, `grpc` and
/// `grpc-web` are HTTP/2; `appProtocol: kubernetes.io/h2c` is HTTP/2; anything else is TCP.
pub fn protocol(port: &ServicePort) -> Protocol {
    let text = port.app_protocol.as_deref().unwrap_or(&port.name);
    if port.app_protocol.is_some() && text.eq_ignore_ascii_case("kubernetes.io/h2c") {
        return Protocol::Http2;
    }
    let prefix = text.split('-').next().unwrap_or("");
    if prefix.eq_ignore_ascii_case("http") {
        Protocol::Http
    } else if prefix.eq_ignore_ascii_case("http2") || prefix.eq_ignore_ascii_case("grpc") {
        Protocol::Http2
    } else {
        Protocol::Tcp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &str, app: Option<&str>) -> Protocol {
        protocol(&ServicePort {
            name: name.into(),
            port: 80,
            app_protocol: app.map(Into::into),
        })
    }

    #[test]
    fn protocol_table() {
        use Protocol::*;
        let table: &[(&str, Option<&str>, Protocol)] = &[
            // Port name prefix before the first `-`, case-insensitive.
            ("http", None, Http),
            ("http-web", None, Http),
            ("HTTP", None, Http),
            ("http2", None, Http2),
            ("http2-api", None, Http2),
            ("grpc", None, Http2),
            ("grpc-admin", None, Http2),
            ("grpc-web", None, Http2),
            ("GRPC", None, Http2),
            ("tcp", None, Tcp),
            ("tcp-db", None, Tcp),
            ("tls", None, Tcp),
            ("https", None, Tcp),
            ("mongo", None, Tcp),
            ("", None, Tcp),
            ("web", None, Tcp),
            ("httpx", None, Tcp),
            ("h2c", None, Tcp),
            ("kubernetes.io/h2c", None, Tcp),
            // appProtocol wins over the name, even when unknown.
            ("web", Some("http"), Http),
            ("grpc", Some("http"), Http),
            ("http", Some("grpc"), Http2),
            ("http", Some("GRPC-Web"), Http2),
            ("tcp", Some("HTTP2"), Http2),
            ("web", Some("kubernetes.io/h2c"), Http2),
            ("web", Some("Kubernetes.io/H2C"), Http2),
            ("http", Some("kubernetes.io/ws"), Tcp),
            ("http", Some("tcp"), Tcp),
            ("http", Some("custom.example/proto"), Tcp),
            ("http", Some(""), Tcp),
        ];
        for (name, app, want) in table {
            assert_eq!(of(name, *app), *want, "name {name:?}, appProtocol {app:?}");
        }
    }

    #[test]
    fn http_and_http2_get_an_http_connection_manager() {
        assert!(Protocol::Http.is_http());
        assert!(Protocol::Http2.is_http());
        assert!(!Protocol::Tcp.is_http());
    }
}
