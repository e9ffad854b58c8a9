use super::*;

fn write(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn with_repo() -> Overrides {
    Overrides {
        repository: Some("/srv/config".into()),
        ..Overrides::default()
    }
}

#[test]
fn defaults_suit_one_machine() {
    let s = Settings::resolve(None, with_repo()).unwrap();
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.data_dir, PathBuf::from("data"));
    assert_eq!(s.identity, PathBuf::from("data/identity.txt"));
    assert_eq!(s.source, Source::Local("/srv/config".into()));
    assert_eq!(s.branch, "main");
    assert_eq!(s.poll_interval, Duration::from_mins(1));
    let allow: Vec<String> = s.view.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(s.view.token_file, None);
}

#[test]
fn the_view_table_sets_networks_and_a_token_file_and_flags_win() {
    let file = write(
        "[git]\nrepository = \"/srv/config\"\n[view]\n\
         allow = [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n\
         token-file = \"/etc/restic-manager/view-token\"\n",
    );
    let s = Settings::resolve(Some(file.path()), Overrides::default()).unwrap();
    let allow: Vec<String> = s.view.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    assert_eq!(
        s.view.token_file,
        Some(PathBuf::from("/etc/restic-manager/view-token"))
    );

    let over = Overrides {
        view_allow: Some(vec!["127.0.0.1".into()]),
        ..Overrides::default()
    };
    let s = Settings::resolve(Some(file.path()), over).unwrap();
    let allow: Vec<String> = s.view.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["127.0.0.1/32"]);
}

#[test]
fn a_bad_network_or_view_key_is_named() {
    let over = Overrides {
        view_allow: Some(vec!["127.0.0.1".into(), "office".into()]),
        ..with_repo()
    };
    let err = Settings::resolve(None, over).unwrap_err().to_string();
    assert_eq!(
        err,
        "--view-allow: `office` is not a network such as 192.0.2.0/24 or ::1/128, nor an \
         address"
    );

    let file = write("[view]\nallow-from = [\"127.0.0.1\"]\n");
    let err = Settings::resolve(Some(file.path()), with_repo())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("allow-from") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn flags_win_over_the_file() {
    let file = write(
        "listen = \"127.0.0.1:9000\"\ndata-dir = \"/var/lib/rm\"\n[git]\n\
         repository = \"https://git.example.net/fleet.git\"\nbranch = \"prod\"\n\
         poll-interval = \"5m\"\n",
    );
    let s = Settings::resolve(Some(file.path()), Overrides::default()).unwrap();
    assert_eq!(s.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(s.identity, PathBuf::from("/var/lib/rm/identity.txt"));
    assert_eq!(
        s.source,
        Source::Remote("https://git.example.net/fleet.git".into())
    );
    assert_eq!(s.poll_interval, Duration::from_mins(5));

    let over = Overrides {
        listen: Some("127.0.0.1:9100".into()),
        branch: Some("staging".into()),
        ..Overrides::default()
    };
    let s = Settings::resolve(Some(file.path()), over).unwrap();
    assert_eq!(s.listen, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(s.branch, "staging");
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/rm"));
}

#[test]
fn an_unknown_key_names_the_file_and_line() {
    let file = write("listen = \"127.0.0.1:1\"\nlisten-port = 8080\n");
    let err = Settings::resolve(Some(file.path()), with_repo()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&file.path().display().to_string()), "{text}");
    assert!(text.contains("listen-port"), "{text}");
    assert!(text.contains("line 2"), "{text}");
}

#[test]
fn bad_values_say_which_key() {
    let over = Overrides {
        listen: Some("localhost".into()),
        ..with_repo()
    };
    let err = Settings::resolve(None, over).unwrap_err().to_string();
    assert!(
        err.starts_with("--listen: `localhost` is not an address"),
        "{err}"
    );

    let over = Overrides {
        poll_interval: Some("soon".into()),
        ..with_repo()
    };
    let err = Settings::resolve(None, over).unwrap_err().to_string();
    assert!(err.starts_with("--poll-interval: "), "{err}");

    let err = Settings::resolve(None, Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--repository"), "{err}");
}

#[test]
fn every_unknown_key_is_reported_with_its_line_first_one_first() {
    let file = write(
        "listen = \"127.0.0.1:1\"\nlisten-addr = \"127.0.0.1:2\"\n[git]\n\
         repository = \"/srv/config\"\nbrnach = \"main\"\n[view]\ntoken = \"x\"\n",
    );
    let err = Settings::resolve(Some(file.path()), Overrides::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "settings file {} has 3 unknown keys:\n\
             \x20 line 2, column 1: unknown key `listen-addr`; did you mean `listen`? valid \
             keys here: data-dir, git, identity, listen, view\n\
             \x20 line 5, column 1: unknown key `brnach`; did you mean `branch`? valid keys \
             here: branch, poll-interval, repository, webhook-secret-file\n\
             \x20 line 7, column 1: unknown key `token`; did you mean `token-file`? valid \
             keys here: allow, token-file",
            file.path().display()
        )
    );
}

#[test]
fn a_bad_value_from_the_file_names_the_file_line_and_column() {
    let cases = [
        (
            "[git]\nrepository = \"/srv/config\"\npoll-interval = \"0s\"\n",
            "line 3, column 17, poll-interval: `0s` is shorter than one second",
        ),
        (
            "[git]\nrepository = \"/srv/config\"\n[view]\n\
             allow = [\"127.0.0.1\", \"300.0.0.1/8\"]\n",
            "line 4, column 23, view.allow: `300.0.0.1/8` is not a network such as \
             192.0.2.0/24 or ::1/128, nor an address",
        ),
        (
            "listen = \"localhost:18740\"\n[git]\nrepository = \"/srv/config\"\n",
            "line 1, column 10, listen: `localhost:18740` is not an address and port such \
             as 127.0.0.1:8080 (invalid socket address syntax)",
        ),
        (
            "[git]\nrepository = \"ftp://x/y\"\n",
            "line 2, column 14, repository: `ftp://x/y` uses the URL scheme `ftp`, which \
             the server cannot fetch from; use an https://, http://, ssh://, git:// or \
             file:// URL, an scp-like user@host:path, or a local path",
        ),
    ];
    for (text, expected) in cases {
        let file = write(text);
        let err = Settings::resolve(Some(file.path()), Overrides::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("settings file {}, {expected}", file.path().display())
        );
    }
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let file = write("[git]\nrepository = \"/srv/config\"\npoll-interval = \"5m\"\n");
    let over = Overrides {
        poll_interval: Some("0s".into()),
        listen: Some("localhost:18740".into()),
        from_env: vec!["poll-interval"],
        ..Overrides::default()
    };
    let err = Settings::resolve(Some(file.path()), over.clone())
        .unwrap_err()
        .to_string();
    // The flag's value is read first, and named as the flag.
    assert!(err.starts_with("--listen: `localhost:18740`"), "{err}");

    let over = Overrides {
        listen: None,
        ..over
    };
    let err = Settings::resolve(Some(file.path()), over)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "RM_POLL_INTERVAL: `0s` is shorter than one second");
}

#[test]
fn a_table_written_as_a_value_says_a_table_is_expected() {
    let file = write("git = \"x\"\n");
    let err = Settings::resolve(Some(file.path()), with_repo())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "settings file {}, line 1, column 1: `git` must be a table, not a string: write \
             a [git] section with any of repository, branch, poll-interval and \
             webhook-secret-file",
            file.path().display()
        )
    );

    let file = write("listen = 8080\n");
    let err = Settings::resolve(Some(file.path()), with_repo())
        .unwrap_err()
        .to_string();
    assert!(!err.contains("struct"), "{err}");
    assert!(err.contains("line 1, column 10"), "{err}");
}

#[test]
fn a_url_scheme_the_server_cannot_fetch_from_is_refused_naming_the_supported_ones() {
    let over = Overrides {
        repository: Some("ftp://x/y".into()),
        ..Overrides::default()
    };
    let err = Settings::resolve(None, over).unwrap_err().to_string();
    assert_eq!(
        err,
        "--repository: `ftp://x/y` uses the URL scheme `ftp`, which the server cannot fetch \
         from; use an https://, http://, ssh://, git:// or file:// URL, an scp-like \
         user@host:path, or a local path"
    );
    for url in [
        "HTTPS://git.example.net/x.git",
        "git://git.example.net/x.git",
    ] {
        assert_eq!(parse_source(url), Ok(Source::Remote(url.to_owned())));
    }
}

#[test]
fn a_missing_settings_file_is_named() {
    let err = Settings::resolve(Some(Path::new("/nonexistent/rm.toml")), with_repo())
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/rm.toml"), "{err}");
}

#[test]
fn the_shipped_example_settings_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/server.toml");
    let s = Settings::resolve(Some(&path), Overrides::default()).unwrap();
    assert_eq!(s.data_dir, PathBuf::from("/var/lib/restic-manager"));
    assert!(matches!(s.source, Source::Remote(_)));
    assert!(s.webhook_secret_file.is_some());
    assert_eq!(s.view, ViewSettings::default());
}

#[test]
fn sources_are_told_apart() {
    assert_eq!(
        parse_source("git@github.com:org/fleet.git").unwrap(),
        Source::Remote("git@github.com:org/fleet.git".into())
    );
    // An explicit URL is cloned, even on this machine; a path is read in place.
    assert_eq!(
        parse_source("file:///srv/fleet.git").unwrap(),
        Source::Remote("file:///srv/fleet.git".into())
    );
    assert_eq!(
        parse_source("./fleet").unwrap(),
        Source::Local("./fleet".into())
    );
}
