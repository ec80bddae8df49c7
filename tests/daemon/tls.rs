//! Postgres as managed services run it: over TLS, verified as `sslmode`
//! asks, or over a Unix socket; with the session settings Meridian adds.

use super::*;
use meridian::store::{PgStore, StoreError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA and a server certificate it issued for `localhost` alone (not for
/// 127.0.0.1), as PEM: (ca, server certificate, server key).
fn server_identity(ca_name: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url,
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        ..DatabaseConfig::default()
    }
}

/// Whether the pool's connection is encrypted, and its `statement_timeout`.
async fn session(cfg: &DatabaseConfig) -> (bool, String) {
    let options = PgStore::connect_options(cfg).unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let row: (bool, String) = sqlx::query_as(
        "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), FALSE), \
                current_setting('statement_timeout')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

#[tokio::test]
async fn postgres_over_tls_is_verified_as_sslmode_asks() {
    let (ca, cert, key) = server_identity("Meridian test database CA");
    let (other_ca, _, _) = server_identity("Some other CA");
    let Some(pg) = OwnPostgres::start(
        &[
            ("ca.pem", ca.as_bytes()),
            ("other-ca.pem", other_ca.as_bytes()),
            ("server.pem", cert.as_bytes()),
            ("server-key.pem", key.as_bytes()),
        ],
        &[
            "ssl=on",
            "ssl_cert_file=server.pem",
            "ssl_key_file=server-key.pem",
        ],
    ) else {
        let required = std::env::var("MERIDIAN_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true");
        assert!(
            !required,
            "Postgres binaries (initdb, pg_ctl) are required for the TLS test"
        );
        eprintln!("SKIPPED: no Postgres binaries to start a throwaway cluster");
        return;
    };
    let dir = pg.dir.path().display().to_string();
    let port = pg.port;
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");

    // verify-full against the name the certificate was issued for: encrypted,
    // and the store migrates and answers over it.
    let full = config(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={dir}/ca.pem"),
    ));
    let store = PgStore::connect(&full).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
    assert_eq!(session(&full).await, (true, "0".to_owned()));

    // The same certificate by address: verify-full refuses it and says why.
    let by_address = config(url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={dir}/ca.pem"),
    ));
    let Err(e) = PgStore::connect(&by_address).await else {
        panic!("verify-full accepted a certificate issued for another name");
    };
    assert!(matches!(e, StoreError::Tls(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("127.0.0.1's certificate is issued for another name"),
        "{e}"
    );
    // verify-ca is refused by the configuration check, in words: the driver
    // would check the name as well (sqlx#3793), which this cluster shows.
    let ca_only = config(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={dir}/ca.pem"),
    ));
    let refused = ca_only.kind().unwrap_err().to_string();
    assert!(
        refused.contains("sslmode=verify-ca is not supported"),
        "{refused}"
    );
    assert!(
        PgStore::connect(&ca_only).await.is_err(),
        "sqlx checks the name under verify-ca now: allow verify-ca in DatabaseConfig::kind"
    );

    // A CA that did not sign the server's certificate is refused in words.
    let wrong_ca = config(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={dir}/other-ca.pem"),
    ));
    let Err(e) = PgStore::connect(&wrong_ca).await else {
        panic!("verify-full accepted a certificate of another CA");
    };
    assert!(
        e.to_string()
            .contains("not signed by a CA this machine trusts"),
        "{e}"
    );

    // require encrypts without verifying; disable does not encrypt.
    let require = session(&config(url("127.0.0.1", "sslmode=require"))).await;
    assert!(require.0, "sslmode=require did not encrypt");
    let disable = session(&config(url("127.0.0.1", "sslmode=disable"))).await;
    assert!(!disable.0, "sslmode=disable encrypted");

    // A Unix socket, named by its directory; and statement_timeout reaches
    // every session (shown by Postgres in its own unit).
    let socket = DatabaseConfig {
        statement_timeout: Duration::from_secs(30),
        ..config(format!(
            "postgres://postgres@localhost:{port}/postgres?host={dir}"
        ))
    };
    socket.kind().unwrap();
    assert_eq!(session(&socket).await, (false, "30s".to_owned()));
    let store = PgStore::connect(&socket).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    store.close().await;
}

/// A server without TLS refuses `sslmode=require` in one clear line.
#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_is_refused() {
    let Some(pg) = OwnPostgres::start(&[], &[]) else {
        let required = std::env::var("MERIDIAN_REQUIRE_PG").is_ok_and(|v| v == "1" || v == "true");
        assert!(!required, "Postgres binaries (initdb, pg_ctl) are required");
        return;
    };
    let cfg = config(format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        pg.port
    ));
    let Err(e) = PgStore::connect(&cfg).await else {
        panic!("sslmode=require connected without TLS");
    };
    assert!(matches!(e, StoreError::Tls(_)), "{e:?}");
    assert!(e.to_string().contains("does not support TLS"), "{e}");
}
