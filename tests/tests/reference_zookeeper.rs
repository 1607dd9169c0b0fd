//! The Apache ZooKeeper reference harness itself: it starts, answers four-letter words,
//! and cleans up after itself.

use wazoo_tests::{four_letter, ZooKeeperProcess};

#[test]
fn reference_zookeeper_answers_four_letter_words() -> anyhow::Result<()> {
    let zk = ZooKeeperProcess::start()?;
    assert!(zk.addr.ip().is_loopback(), "listens on {}", zk.addr);
    assert_ne!(zk.addr.port(), 0);

    assert_eq!(four_letter(zk.addr, "ruok")?, "imok");
    let srvr = four_letter(zk.addr, "srvr")?;
    assert!(srvr.contains("Mode: standalone"), "srvr: {srvr}");
    assert!(srvr.contains("Zookeeper version: 3.8"), "srvr: {srvr}");
    // the config the harness promises: 4lw whitelist * (mntr is not on the default list),
    // tickTime 2000
    let conf = four_letter(zk.addr, "conf")?;
    assert!(conf.contains("tickTime=2000"), "conf: {conf}");
    assert!(
        conf.contains(&format!("clientPort={}\n", zk.addr.port())),
        "conf: {conf}"
    );
    assert!(four_letter(zk.addr, "mntr")?.contains("zk_server_state\tstandalone"));

    // Dropping it kills the JVM (the port stops answering) and deletes its temp dir.
    let (addr, dir) = (zk.addr, zk.dir().to_path_buf());
    assert!(dir.exists());
    drop(zk);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        four_letter(addr, "ruok").is_err(),
        "{addr} still answers after drop"
    );
    Ok(())
}

#[test]
fn two_reference_servers_run_side_by_side() -> anyhow::Result<()> {
    let a = ZooKeeperProcess::start()?;
    let b = ZooKeeperProcess::start()?;
    assert_ne!(a.addr, b.addr);
    assert_ne!(a.dir(), b.dir());
    assert_eq!(four_letter(a.addr, "ruok")?, "imok");
    assert_eq!(four_letter(b.addr, "ruok")?, "imok");
    Ok(())
}
