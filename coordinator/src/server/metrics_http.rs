//! The HTTP side of `lem serve --metrics-listen`: lem-net's responder, the text asked of
//! the driver thread (which owns the scheduler and the ingest tally); a driver that does
//! not answer is a 503.

use super::driver_thread::DriverInput;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::Duration;

/// How long a scrape waits for the driver thread (busy with a large ingest batch).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `listen` and serves scrapes (lem-net's responder) until the runtime stops.
/// Returns the bound address.
pub async fn serve(listen: SocketAddr, driver: Sender<DriverInput>) -> std::io::Result<SocketAddr> {
    lem_net::metrics_http::serve(listen, move || {
        let driver = driver.clone();
        async move { scrape(&driver).await.map_err(str::to_owned) }
    })
    .await
}

async fn scrape(driver: &Sender<DriverInput>) -> Result<String, &'static str> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    driver
        .send(DriverInput::Metrics { reply })
        .map_err(|_| "the driver thread has stopped")?;
    match tokio::time::timeout(DRIVER_TIMEOUT, answer).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(_)) => Err("the driver thread has stopped"),
        Err(_) => Err("the driver thread did not answer within 10 s"),
    }
}
