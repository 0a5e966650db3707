//! The `[gateway]` section resolved: the upstream given by the `--upstream-*` flags, then
//! those of `--upstreams` / `[[gateway.upstreams]]`, checked, with the timeouts.

use std::time::Duration;

use anyhow::bail;

use super::flags::GatewayFlags;

/// The gateway's settings from its flags, the rest from `d`.
pub(super) fn settings(
    s: &GatewayFlags,
    d: &strata_server::GatewaySettings,
) -> anyhow::Result<strata_server::GatewaySettings> {
    let mut upstreams = Vec::new();
    let pairs = |flag: &str, v: &Option<String>| -> anyhow::Result<Vec<(String, String)>> {
        v.as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("{flag}: {p:?} is not name=value"))
            })
            .collect()
    };
    if let Some(url) = &s.upstream_url {
        let mut u = strata_server::GatewayUpstream {
            name: "default".into(),
            base_url: url.clone(),
            api_key: s.upstream_key.clone(),
            models: s
                .upstream_models
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            ..Default::default()
        };
        u.aliases = pairs("upstream_aliases", &s.upstream_aliases)?
            .into_iter()
            .collect();
        for (model, price) in pairs("upstream_prices", &s.upstream_prices)? {
            let parsed = price
                .split_once('/')
                .and_then(|(i, o)| Some((i.parse::<f64>().ok()?, o.parse::<f64>().ok()?)))
                .filter(|(i, o)| i.is_finite() && o.is_finite() && *i >= 0.0 && *o >= 0.0);
            let Some((input, output)) = parsed else {
                bail!(
                    "upstream_prices: {model}={price} is not input/output dollars per million tokens"
                );
            };
            u.prices
                .insert(model, strata_server::GatewayPrice { input, output });
        }
        upstreams.push(u);
    } else if s.upstream_key.is_some() || s.upstream_models.is_some() || s.upstream_prices.is_some()
    {
        bail!(
            "upstream_key, upstream_models and upstream_prices describe --upstream-url: give it too"
        );
    }
    upstreams.extend(s.upstreams.clone().unwrap_or_default().0);
    for (i, u) in upstreams.iter().enumerate() {
        if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
            bail!(
                "upstream {:?}: base_url must be an http:// or https:// URL",
                u.name
            );
        }
        if u.name.is_empty() || upstreams[..i].iter().any(|o| o.name == u.name) {
            bail!(
                "upstream names must be unique and non-empty (got {:?})",
                u.name
            );
        }
    }
    let semantic = match s.semantic_cache.as_deref() {
        None => d.semantic,
        Some(m) => strata_server::SemanticMode::parse(m)
            .ok_or_else(|| anyhow::anyhow!("semantic_cache: {m:?} is not off, shadow or on"))?,
    };
    let semantic_threshold = s.semantic_threshold.unwrap_or(d.semantic_threshold);
    if !(0.0..=1.0).contains(&semantic_threshold) {
        bail!("semantic_threshold: {semantic_threshold} is not from 0 to 1");
    }
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    Ok(strata_server::GatewaySettings {
        upstreams,
        connect_timeout: secs(s.upstream_connect_timeout_secs, d.connect_timeout),
        first_byte_timeout: secs(s.upstream_first_byte_timeout_secs, d.first_byte_timeout),
        idle_timeout: secs(s.upstream_idle_timeout_secs, d.idle_timeout),
        retries: s.upstream_retries.unwrap_or(d.retries),
        semantic,
        semantic_threshold,
        ..d.clone()
    })
}
