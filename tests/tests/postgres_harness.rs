//! The PostgreSQL test harness itself: a private server starts, answers on its socket, hosts
//! several databases, and is gone (stopped, directory removed) after drop.

use cunyun_tests::postgres::PgServer;

#[test]
fn private_server_starts_serves_and_stops_on_drop() -> anyhow::Result<()> {
    let pg = PgServer::start()?;
    assert_eq!(pg.psql("postgres", "SELECT 1 + 1")?, "2");
    assert_eq!(pg.psql("postgres", "SHOW listen_addresses")?, "");
    assert_eq!(pg.psql("postgres", "SHOW fsync")?, "off");
    let url = pg.create_database("harness_a")?;
    assert!(url.contains("dbname=harness_a"), "{url}");
    assert_eq!(
        pg.psql("harness_a", "SELECT current_database()")?,
        "harness_a"
    );
    assert!(pg.create_database("bad name").is_err());
    let dir = pg.socket_dir();
    assert!(dir.join(".s.PGSQL.5432").exists());
    drop(pg);
    assert!(!dir.exists(), "the server's directory is removed on drop");
    Ok(())
}
