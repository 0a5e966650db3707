//! Configuration layering, parsing and masking.

use super::flags::ServerFlags;
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
fn durations() {
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    for bad in ["0", "0h", "1w", "h", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn cache_ttl_overrides() {
    let kinds = strata_engine::default_cache_kinds;
    let k = cache_kinds(
        kinds(),
        Some("search_results=5, tag_counts=7"),
        Some("embedding=9"),
    )
    .unwrap();
    let ttl = |n: &str| k.iter().find(|x| x.name == n).unwrap().l1_ttl.as_secs();
    assert_eq!(
        (ttl("search_results"), ttl("tag_counts"), ttl("embedding")),
        (5, 7, 3600)
    );
    assert!(cache_kinds(kinds(), Some("nope=1"), None).is_err());
    assert!(cache_kinds(kinds(), Some("search_results"), None).is_err());
    assert!(cache_kinds(kinds(), None, Some("nope=1")).is_err());
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
        jobs: JobFlags {
            workers: Some(3),
            ..JobFlags::default()
        },
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

/// Resolves `text` as the only layer (no flags, no environment).
fn from_file(text: &str) -> anyhow::Result<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.toml");
    std::fs::write(&path, text).unwrap();
    Config::resolve(&Overrides {
        config: Some(path),
        ..Overrides::default()
    })
}

#[test]
fn the_file_takes_settings_flat_or_by_section() {
    let flat = from_file("workers = 4\ncache_l1 = \"1MiB\"\nlisten = \"127.0.0.1:9\"\n").unwrap();
    let sectioned = from_file(
        "[jobs]\nworkers = 4\n[cache]\ncache_l1 = 1048576\n[server]\nlisten = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    for c in [flat, sectioned] {
        assert_eq!(c.engine.jobs.workers, 4);
        assert_eq!(c.engine.cache.l1_bytes, 1 << 20);
        assert_eq!(c.server.listen.port(), 9);
    }
    let err = |text: &str| format!("{:#}", from_file(text).unwrap_err());
    let misplaced = err("[storage]\nworkers = 4\n");
    assert!(misplaced.contains("belongs in [jobs]"), "{misplaced}");
    let twice = err("workers = 4\n[jobs]\nworkers = 5\n");
    assert!(twice.contains("set twice"), "{twice}");
    let unknown = err("[jobs]\nwrokers = 4\n");
    assert!(unknown.contains("wrokers"), "{unknown}");
    let not_a_table = err("jobs = 4\n");
    assert!(not_a_table.contains("[jobs]"), "{not_a_table}");
    let bad_size = err("max_upload = \"5 parsecs\"\n");
    assert!(bad_size.contains("parsecs"), "{bad_size}");
}

#[test]
fn the_vector_index_is_chosen_for_the_embedded_store_only() {
    use strata_engine::vectors::LocalIndex;
    assert_eq!(
        from_file("vector_index = \"qdrant\"\n")
            .unwrap()
            .engine
            .ann
            .local,
        LocalIndex::Qdrant
    );
    assert_eq!(
        from_file("[embedding]\nvector_index = \"usearch\"\n")
            .unwrap()
            .engine
            .ann
            .local,
        LocalIndex::Usearch
    );
    // Unset, it follows where tenants come from: one local tenant, or many.
    let local = |toml: &str| from_file(toml).unwrap().engine.ann.local;
    assert_eq!(local(""), LocalIndex::Usearch);
    let many = if cfg!(feature = "qdrant") {
        LocalIndex::Qdrant
    } else {
        LocalIndex::Usearch
    };
    assert_eq!(
        local("jwt_secret = \"0123456789abcdef0123456789abcdef\"\n"),
        many
    );
    assert_eq!(local("tenant_header = \"x-tenant\"\n"), many);
    assert_eq!(
        local("tenant_header = \"x-tenant\"\nvector_index = \"usearch\"\n"),
        LocalIndex::Usearch
    );
    let unknown = format!("{:#}", from_file("vector_index = \"faiss\"\n").unwrap_err());
    assert!(unknown.contains("faiss"), "{unknown}");
    let over_postgres = format!(
        "{:#}",
        from_file("vector_index = \"qdrant\"\ndatabase_url = \"postgres://h/db\"\n").unwrap_err()
    );
    assert!(over_postgres.contains("pgvector"), "{over_postgres}");
}

#[test]
fn every_flag_belongs_to_one_section() {
    use clap::Args as _;
    let all = Overrides::augment_args(clap::Command::new("strata"));
    let sections = flags::sections();
    for arg in all.get_arguments().filter(|a| a.get_id() != "config") {
        let homes = sections
            .iter()
            .filter(|(_, f)| f.get_arguments().any(|a| a.get_id() == arg.get_id()))
            .count();
        assert_eq!(homes, 1, "--{} is in {homes} sections", arg.get_id());
    }
}

#[test]
fn resolved_settings_never_print_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        config: Some(dir.path().join("absent.toml")),
        storage: StorageFlags {
            database_url: Some("postgres://app:pg-hunter2@db/strata".into()),
            ..StorageFlags::default()
        },
        cache: CacheFlags {
            redis_url: Some("redis://:redis-hunter2@cache:6379/0".into()),
            ..CacheFlags::default()
        },
        embedding: EmbeddingFlags {
            embed_url: Some("http://embed.local/v1".into()),
            embed_api_key: Some("sk-hunter2".into()),
            ..EmbeddingFlags::default()
        },
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
        auth: AuthFlags {
            admin_tenants: Some(vec!["ops".into()]),
            ..AuthFlags::default()
        },
        ..Overrides::default()
    };
    let err = format!("{:#}", Config::resolve(&flags).unwrap_err());
    assert!(err.contains("tenant_header"), "{err}");
    let flags = Overrides {
        auth: AuthFlags {
            admin_tenants: Some(vec!["ops".into(), " oncall ".into()]),
            tenant_header: Some("x-forwarded-user".into()),
            ..AuthFlags::default()
        },
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
        (
            "extract_memory",
            format!("{}GiB", d.engine.extract.memory_limit >> 30),
        ),
        ("chunk_tokens", d.engine.jobs.chunk.max_tokens.to_string()),
        ("chunk_overlap", d.engine.jobs.chunk.overlap.to_string()),
        (
            "shutdown_grace_secs",
            d.engine.jobs.shutdown_grace.as_secs().to_string(),
        ),
        ("embed_max_batch", d.engine.batch.max_batch.to_string()),
        (
            "embed_model",
            strata_engine::HttpSettings::DEFAULT_MODEL.to_owned(),
        ),
        ("search_ef", d.engine.ann.expansion_search.to_string()),
        ("vector_index", d.engine.ann.local.name().to_owned()),
        (
            "db_min_connections",
            d.engine.postgres.min_connections.to_string(),
        ),
        (
            "max_in_flight",
            d.server.admission.max_in_flight.to_string(),
        ),
        (
            "request_timeout_secs",
            d.server.admission.timeout.as_secs().to_string(),
        ),
        (
            "upload_timeout_secs",
            d.server.admission.upload_timeout.as_secs().to_string(),
        ),
        ("search_queue", d.engine.batch.queue.to_string()),
        (
            "search_queue_wait_ms",
            d.engine
                .batch
                .max_queue_wait
                .map_or(0, |w| w.as_millis())
                .to_string(),
        ),
        (
            "compress_min_bytes",
            d.server.compress_min_bytes.unwrap_or(0).to_string(),
        ),
        (
            "slow_request_ms",
            d.server
                .slow_request
                .map_or(0, |d| d.as_millis())
                .to_string(),
        ),
        (
            "jwt_leeway_secs",
            strata_server::auth::AuthSettings::default()
                .leeway
                .as_secs()
                .to_string(),
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

#[test]
fn bearer_auth_settings_are_checked_and_never_printed() {
    let secret = "s3cret-s3cret-s3cret-s3cret-s3cret-42";
    let flags = |auth: AuthFlags| Overrides {
        auth,
        ..Overrides::default()
    };
    let c = Config::resolve(&flags(AuthFlags {
        jwt_secret: Some(secret.into()),
        admin_key: Some("operator-key-0123456789".into()),
        ..AuthFlags::default()
    }))
    .unwrap();
    assert!(matches!(
        c.server.identity,
        strata_server::caller::Identity::Token(_)
    ));
    for shown in [format!("{c:?}"), c.describe()] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("operator-key-0123"), "{shown}");
    }
    let err = |auth: AuthFlags| format!("{:#}", Config::resolve(&flags(auth)).unwrap_err());
    let short = err(AuthFlags {
        jwt_secret: Some("short".into()),
        ..AuthFlags::default()
    });
    assert!(short.contains("at least 32 bytes"), "{short}");
    let both = err(AuthFlags {
        jwt_secret: Some(secret.into()),
        tenant_header: Some("x-user".into()),
        ..AuthFlags::default()
    });
    assert!(both.contains("does not combine"), "{both}");
    let missing_keys = err(AuthFlags {
        jwt_keys: Some("/nonexistent/keys.pem".into()),
        ..AuthFlags::default()
    });
    assert!(
        missing_keys.contains("/nonexistent/keys.pem"),
        "{missing_keys}"
    );
}

#[test]
fn no_auth_beyond_loopback_needs_to_be_asked_for() {
    let at = |listen: &str, insecure: Option<bool>, secret: Option<&str>| {
        Config::resolve(&Overrides {
            server: ServerFlags {
                listen: Some(listen.parse().unwrap()),
                ..ServerFlags::default()
            },
            auth: AuthFlags {
                insecure_no_auth: insecure,
                jwt_secret: secret.map(Into::into),
                ..AuthFlags::default()
            },
            ..Overrides::default()
        })
        .unwrap()
        .check_exposure()
    };
    assert!(at("127.0.0.1:7733", None, None).is_ok());
    assert!(at("[::1]:7733", None, None).is_ok());
    let refused = at("0.0.0.0:7733", None, None).unwrap_err().to_string();
    assert!(refused.contains("--insecure-no-auth"), "{refused}");
    assert!(at("0.0.0.0:7733", Some(true), None).is_ok());
    let secret = "0123456789abcdef0123456789abcdef";
    assert!(at("0.0.0.0:7733", None, Some(secret)).is_ok());
}

#[test]
fn cors_origins_are_origins() {
    let ok = from_file("cors_origins = [\"https://app.example.com\", \"http://localhost:5173\"]\n")
        .unwrap();
    assert_eq!(ok.server.cors_origins.len(), 2);
    assert!(from_file("cors_origins = [\"*\"]\n").is_ok());
    for bad in ["app.example.com", "https://x/path", "javascript:alert(1)"] {
        let e = from_file(&format!("cors_origins = [{bad:?}]\n")).unwrap_err();
        assert!(format!("{e:#}").contains("cors_origins"), "{bad}");
    }
}
