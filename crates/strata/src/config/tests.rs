//! Configuration layering, parsing and masking.

use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_size("50MiB"), Ok(50 * 1024 * 1024));
    assert_eq!(parse_size("10 MB"), Ok(10_000_000));
    assert_eq!(parse_size("123"), Ok(123));
    assert!(parse_size("ten").is_err());
    assert!(parse_size("5 parsecs").is_err());
}

#[test]
fn cache_ttl_overrides() {
    let k = cache_kinds(Some("search_results=5, tag_counts=7"), Some("embedding=9")).unwrap();
    let ttl = |n: &str| k.iter().find(|x| x.name == n).unwrap().l1_ttl.as_secs();
    assert_eq!(
        (ttl("search_results"), ttl("tag_counts"), ttl("embedding")),
        (5, 7, 3600)
    );
    assert!(cache_kinds(Some("nope=1"), None).is_err());
    assert!(cache_kinds(Some("search_results"), None).is_err());
    assert!(cache_kinds(None, Some("nope=1")).is_err());
    let l2 = |n: &str| k.iter().find(|x| x.name == n).unwrap().l2_ttl.as_secs();
    assert_eq!((l2("embedding"), l2("search_results")), (9, 600));
}

#[test]
fn flags_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.toml");
    std::fs::write(
        &path,
        "workers = 7\nchunk_tokens = 300\nmax_upload = \"1MiB\"\n",
    )
    .unwrap();
    let flags = Overrides {
        config: Some(path),
        workers: Some(3),
        ..Overrides::default()
    };
    let c = Config::resolve(&flags).unwrap();
    assert_eq!(c.engine.jobs.workers, 3);
    assert_eq!(c.engine.jobs.chunk.max_tokens, 300);
    assert_eq!(c.engine.max_upload_bytes, 1 << 20);
    assert_eq!(c.engine.jobs.chunk.overlap, 40);
}

#[test]
fn unknown_file_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, "wrokers = 7\n").unwrap();
    let flags = Overrides {
        config: Some(path),
        ..Overrides::default()
    };
    let err = format!("{:#}", Config::resolve(&flags).unwrap_err());
    assert!(err.contains("wrokers"), "{err}");
}

#[test]
fn resolved_settings_never_print_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        config: Some(dir.path().join("absent.toml")),
        database_url: Some("postgres://app:pg-hunter2@db/strata".into()),
        redis_url: Some("redis://:redis-hunter2@cache:6379/0".into()),
        embed_url: Some("http://embed.local/v1".into()),
        embed_api_key: Some("sk-hunter2".into()),
        ..Overrides::default()
    };
    std::fs::write(dir.path().join("absent.toml"), "").unwrap();
    let c = Config::resolve(&flags).unwrap();
    for shown in [format!("{c:?}"), c.describe()] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:****@db/strata"), "{shown}");
    }
    assert_eq!(
        c.engine.database_url.as_ref().unwrap().expose(),
        "postgres://app:pg-hunter2@db/strata"
    );
}

#[test]
fn admin_tenants_need_a_tenant_header() {
    let flags = Overrides {
        admin_tenants: Some(vec!["ops".into()]),
        ..Overrides::default()
    };
    let err = format!("{:#}", Config::resolve(&flags).unwrap_err());
    assert!(err.contains("tenant_header"), "{err}");
    let flags = Overrides {
        admin_tenants: Some(vec!["ops".into(), " oncall ".into()]),
        tenant_header: Some("x-forwarded-user".into()),
        ..Overrides::default()
    };
    let c = Config::resolve(&flags).unwrap();
    let strata_server::caller::Identity::Header { admins, .. } = &c.server.identity else {
        panic!("header mode expected");
    };
    assert_eq!(admins.len(), 2);
}

#[test]
fn the_help_states_the_owning_crates_defaults() {
    use clap::Args as _;
    let cmd = Overrides::augment_args(clap::Command::new("strata"));
    let d = Defaults::new();
    let help = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_else(|| panic!("no --{id}"))
    };
    for (id, want) in [
        ("workers", d.engine.jobs.workers.to_string()),
        ("job_max_attempts", d.engine.jobs.max_attempts.to_string()),
        ("job_lease_secs", d.engine.jobs.lease.as_secs().to_string()),
        (
            "job_backoff_secs",
            d.engine.jobs.backoff_base.as_secs().to_string(),
        ),
        (
            "extract_timeout_secs",
            d.engine.jobs.extract_timeout.as_secs().to_string(),
        ),
        ("chunk_tokens", d.engine.jobs.chunk.max_tokens.to_string()),
        ("chunk_overlap", d.engine.jobs.chunk.overlap.to_string()),
        (
            "shutdown_grace_secs",
            d.engine.jobs.shutdown_grace.as_secs().to_string(),
        ),
        ("embed_max_batch", d.engine.batch.max_batch.to_string()),
        ("search_ef", d.engine.ann.expansion_search.to_string()),
        (
            "db_min_connections",
            d.engine.postgres.min_connections.to_string(),
        ),
        (
            "cache_warm_queries",
            d.server.warm.queries_per_tenant.to_string(),
        ),
        (
            "cache_warm_interval_secs",
            d.server.warm.interval.as_secs().to_string(),
        ),
    ] {
        let text = help(id);
        assert!(
            text.contains(&format!("[default: {want}]")),
            "--{id} says {text:?}, the default is {want}"
        );
    }
}
