//! `wss://`: a server whose certificate comes from a private CA is trusted with `ca`, and
//! not without it. The certificates are made with the openssl command for each run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::{
    HOST, InProcessAgent, Stream, TestExecutor, TestServer, settings, test_timing,
};

const CA_CONFIG: &str = "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n\
    [dn]\nCN = restic-manager test CA\n\
    [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
    subjectKeyIdentifier = hash\n";
const SERVER_CONFIG: &str = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = 127.0.0.1\n";
const SERVER_EXT: &str = "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
    extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n";

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "these tests make their certificates with the `openssl` command, which did not \
                 run ({e}); install it (Debian: apt-get install openssl)"
            )
        });
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    std::fs::write(dir.join("ca.cnf"), CA_CONFIG).unwrap();
    std::fs::write(dir.join("server.cnf"), SERVER_CONFIG).unwrap();
    std::fs::write(dir.join("server.ext"), SERVER_EXT).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-config", "ca.cnf", "-days", "2"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-config", "server.cnf"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

async fn tls_server(dir: &Path) -> TestServer {
    let cert = CertificateDer::from_pem_file(dir.join("server.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    TestServer::start_with(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let stream = acceptor.accept(tcp).await.ok()?;
            Some(Box::new(stream) as Box<dyn Stream>)
        }
    })
    .await
}

#[tokio::test]
async fn a_server_with_a_private_ca_is_trusted_when_given_that_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let mut server = tls_server(certs.path()).await;
    let state = tempfile::tempdir().unwrap();
    let mut settings = settings(
        &format!("wss://127.0.0.1:{}", server.addr.port()),
        state.path(),
        test_timing(),
    );
    settings.ca = Some(certs.path().join("ca.pem"));
    let agent = InProcessAgent::start(settings, TestExecutor::immediate());

    let mut conn = server.accept().await;
    assert_eq!(conn.handshake().await.host, HOST);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_with_a_private_ca_is_not_trusted_without_it() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let mut server = tls_server(certs.path()).await;
    let state = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(
        settings(
            &format!("wss://127.0.0.1:{}", server.addr.port()),
            state.path(),
            test_timing(),
        ),
        TestExecutor::immediate(),
    );

    // Several attempts are made (the backoff is short), and none gets past TLS.
    assert!(server.accept_within(Duration::from_secs(2)).await.is_none());
    assert!(agent.is_running());
    agent.stop().await.unwrap();
}
