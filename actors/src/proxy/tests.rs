//! Unit tests of the proxy settings and routes (the `NO_PROXY` matching has its own,
//! in `no_proxy.rs`; the tunnel is tested end to end in `tests/proxy.rs`).

use super::*;

fn config(https: Option<&str>, http: Option<&str>, no_proxy: Option<&str>) -> ProxyConfig {
    ProxyConfig {
        https_proxy: https.map(str::to_string),
        http_proxy: http.map(str::to_string),
        no_proxy: no_proxy.map(str::to_string),
    }
}

#[test]
fn a_proxy_setting_is_parsed_as_go_parses_it() {
    let proxy = Proxy::parse("http://proxy.corp:3128/ignored").unwrap();
    assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 3128));
    assert!(!proxy.has_credentials());
    // Without a scheme it is http; without a port, 80.
    let proxy = Proxy::parse("proxy.corp").unwrap();
    assert_eq!((proxy.host(), proxy.port()), ("proxy.corp", 80));
    let proxy = Proxy::parse("HTTP://[fd00::1]:8080").unwrap();
    assert_eq!((proxy.host(), proxy.port()), ("fd00::1", 8080));
    assert_eq!(proxy.to_string(), "[fd00::1]:8080");
    for bad in [
        "http://",
        "http://:3128",
        "http://proxy:port",
        "http://[::1",
    ] {
        assert!(Proxy::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn credentials_become_basic_auth_and_are_never_shown() {
    // user "agent", password "p@ss:w/rd" percent-encoded in the URL.
    let setting = "http://agent:p%40ss%3Aw%2Frd@proxy.corp:3128";
    let proxy = Proxy::parse(setting).unwrap();
    assert!(proxy.has_credentials());
    assert_eq!(
        proxy.authorization(),
        Some(format!("Basic {}", tunnel::base64(b"agent:p@ss:w/rd")).as_str())
    );
    for shown in [
        proxy.to_string(),
        format!("{proxy:?}"),
        format!("{:?}", ProxyConfig::through(setting)),
        Route::Tunnel(proxy.clone()).to_string(),
    ] {
        assert!(
            !shown.contains("agent") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert!(!shown.contains("Basic"), "{shown}");
    }
    // A user without a password is `user:`.
    let proxy = Proxy::parse("user@proxy:1").unwrap();
    assert_eq!(
        proxy.authorization(),
        Some(format!("Basic {}", tunnel::base64(b"user:")).as_str())
    );
    // Errors hold the setting without its credentials.
    for bad in [
        "socks5://agent:hunter2@proxy:1080",
        "https://agent:hunter2@proxy:443",
        "http://agent:hunter2%zz@proxy:3128",
        "http://agent:hunter2@proxy:port",
    ] {
        let e = Proxy::parse(bad).unwrap_err().to_string();
        assert!(!e.contains("hunter2") && !e.contains("agent"), "{e}");
        assert!(e.contains(REDACTED) && e.contains("proxy"), "{e}");
    }
}

#[test]
fn https_and_http_each_use_their_own_proxy_and_loopback_never_a_proxy() {
    let routes = config(
        Some("http://tls-proxy:1"),
        Some("http://plain-proxy:2"),
        None,
    )
    .routes();
    let via = |scheme: &str, host: &str| match routes.route(scheme, host, 443) {
        Route::Tunnel(proxy) => proxy.host().to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(via("https", "api.example.com"), "tls-proxy");
    assert_eq!(via("HTTPS", "api.example.com"), "tls-proxy");
    assert_eq!(via("http", "api.example.com"), "plain-proxy");
    for host in [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "[::1]",
    ] {
        assert_eq!(routes.route("https", host, 443), Route::Loopback, "{host}");
    }
    // No fallback from one scheme's proxy to the other's.
    let routes = config(None, Some("http://plain-proxy:2"), None).routes();
    assert_eq!(routes.route("https", "api.example.com", 443), Route::Direct);
    assert_eq!(
        ProxyConfig::default().routes().route("https", "x", 443),
        Route::Direct
    );
}

#[test]
fn no_proxy_sends_the_hosts_it_names_directly() {
    let routes = config(Some("proxy:3128"), None, Some("internal.corp, 10.0.0.0/8")).routes();
    assert_eq!(
        routes.route("https", "api.internal.corp", 443),
        Route::Excluded
    );
    assert_eq!(routes.route("https", "10.1.1.1", 443), Route::Excluded);
    assert!(matches!(
        routes.route("https", "api.lthn.sh", 443),
        Route::Tunnel(_)
    ));
    let everything = config(Some("proxy:3128"), None, Some("*")).routes();
    assert_eq!(
        everything.route("https", "api.lthn.sh", 443),
        Route::Excluded
    );
}

#[test]
fn an_unusable_proxy_fails_validation_and_its_requests_never_go_direct() {
    let proxy = config(Some("socks5://proxy:1080"), None, None);
    assert!(matches!(
        proxy.validate(),
        Err(PlatformConfigError::InvalidProxy { .. })
    ));
    let route = proxy.route_to("https://api.example.com");
    assert!(matches!(route, Route::Unusable(_)));
    assert!(route.to_string().contains("socks5"));
    // A blank setting is no proxy.
    assert!(ProxyConfig::through("  ").validate().is_ok());
}

#[test]
fn the_route_of_a_url_describes_the_proxy_in_use() {
    let proxy = ProxyConfig::through("http://u:secret@proxy.corp:3128");
    let shown = proxy.route_to("https://api.example.com/base").to_string();
    assert_eq!(
        shown,
        "through the proxy proxy.corp:3128 (CONNECT tunnel, with credentials)"
    );
    assert_eq!(proxy.route_to("http://127.0.0.1:9"), Route::Loopback);
    let excluded = ProxyConfig {
        no_proxy: Some("example.com:8443".into()),
        ..proxy
    };
    assert_eq!(
        excluded.route_to("https://api.example.com:8443"),
        Route::Excluded
    );
    assert!(matches!(
        excluded.route_to("https://api.example.com"),
        Route::Tunnel(_)
    ));
    assert_eq!(
        ProxyConfig::default()
            .route_to("https://api.example.com")
            .to_string(),
        "direct (no proxy set)"
    );
}
