//! SIGINT and SIGTERM as one stream, installed once at start: from then on neither signal kills
//! the process, so a second one can mean "stop now" instead of the default exit.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The process's SIGINT and SIGTERM.
#[derive(Debug)]
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Completes at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::sys::signal::{Signal as NixSignal, kill};
    use nix::unistd::Pid;

    use super::*;

    #[tokio::test]
    async fn sigterm_and_sigint_each_arrive_once() {
        let mut signals = Signals::install().expect("handlers");
        for sent in [NixSignal::SIGTERM, NixSignal::SIGINT] {
            kill(Pid::this(), sent).expect("signal sent");
            tokio::time::timeout(Duration::from_secs(5), signals.recv()).await.expect("received");
        }
        let nothing = tokio::time::timeout(Duration::from_millis(50), signals.recv()).await;
        assert!(nothing.is_err(), "no signal was pending");
    }
}
