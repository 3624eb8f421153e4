//! Cross-origin calls from browsers (`api.cors_origins`): a dashboard served
//! from another origin (the seeds' Next.js front end) may read the API and
//! post to the webhook; its preflights are answered here.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::http::{header, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS layer for `origins`; none when the list is empty (browsers then
/// refuse cross-origin calls, as without CORS).
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            bail!("api.cors_origins: \"*\" allows any origin; list it alone");
        }
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                let ok = (o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/');
                if !ok {
                    bail!("api.cors_origins: {o:?} is not an origin: write scheme://host[:port], no path or trailing slash");
                }
                HeaderValue::from_str(o).with_context(|| format!("api.cors_origins: {o:?}"))
            })
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&["*".into()]).unwrap().is_some());
        assert!(layer(&["https://dash.example.com".into()])
            .unwrap()
            .is_some());
        for bad in ["dash.example.com", "https://dash.example.com/", "*,x"] {
            let origins: Vec<String> = bad.split(',').map(str::to_owned).collect();
            let e = layer(&origins).unwrap_err().to_string();
            assert!(e.contains("api.cors_origins"), "{e}");
        }
    }
}
