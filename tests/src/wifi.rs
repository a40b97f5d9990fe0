//! A loopback TCP relay standing for a village's Wi-Fi in browser tests: while "out of range"
//! it refuses new connections and cuts open ones, so the phone really cannot reach the node.
//! DevTools' offline emulation alone does not hold for every request (e.g. across a fresh tab's
//! navigations of a page controlled by a service worker), so the tests use both.

/// The relay: connect to `127.0.0.1:<port>` to reach the target while it is up.
pub struct Wifi {
    /// The relay's loopback port.
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl Wifi {
    /// Starts relaying `127.0.0.1:<port>` to `target`, up.
    pub async fn start(target: std::net::SocketAddr) -> anyhow::Result<Wifi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*rx.borrow() {
                    continue; // dropped: connection refused/reset
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Wifi { port, up })
    }

    /// In range (`true`) or out of range (`false`).
    pub fn set(&self, up: bool) {
        let _ = self.up.send(up);
    }
}
