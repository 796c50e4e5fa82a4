//! Finding the active coordinator of a region, for every client of it (the worker runtime, the
//! CLI's admin calls, and other regions' coordinators asking for its status): a [`Route`] over
//! the configured addresses, and
//! [`call_following_leader`], which makes a call and, when a standby refuses it naming the
//! leader (`lockstep-leader`, read by [`crate::leader_hint`]), makes it again there,
//! a few hops at most.
//!
//! It owns only where the next call goes. Connecting (TLS, tokens), logging, metrics and what
//! to do when no coordinator answers (back off, try the next configured address, give up)
//! belong to the callers: this module never connects, sleeps or logs.

use crate::tls::ClientError;
use std::future::Future;

/// Standby redirects followed in a row before a refusal is the answer (a standby naming a
/// leader that itself names another is an election in progress).
pub const MAX_HOPS: u32 = 3;

/// A failed call that may name the active coordinator.
pub trait Refusal {
    /// The address of the leader a standby named in its refusal, if it named one.
    fn leader(&self) -> Option<String>;
}

impl Refusal for tonic::Status {
    fn leader(&self) -> Option<String> {
        crate::leader_hint(self)
    }
}

/// Makes `call` on the route's current address; while the refusal names the active
/// coordinator (at most [`MAX_HOPS`] times in a row), moves the route there, tells
/// `followed(standby, leader)` and calls again. Returns the first answer, or the refusal that
/// named no leader to go to (the route then stays on the address that refused).
///
/// `call` gets the address to call (a client is the caller's to build or reuse for it). The
/// address a standby names is followed as given: the caller's TLS settings (CA, client
/// certificate, `--tls-domain`) apply to it as to the configured ones.
pub async fn call_following_leader<T, E, Fut>(
    route: &mut Route,
    mut call: impl FnMut(&str) -> Fut,
    mut followed: impl FnMut(&str, &str),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: Refusal,
{
    let mut hops = 0;
    loop {
        let refusal = match call(route.current()).await {
            Ok(answer) => return Ok(answer),
            Err(refusal) => refusal,
        };
        let standby = route.current().to_string();
        match refusal.leader() {
            Some(leader) if hops < MAX_HOPS && route.follow(&leader) => {
                hops += 1;
                followed(&standby, &leader);
            }
            _ => return Err(refusal),
        }
    }
}

/// Where the next call goes: one of the configured addresses, or the active coordinator a
/// standby named.
#[derive(Debug)]
pub struct Route {
    configured: Vec<String>,
    index: usize,
    /// The address a standby named, while we follow it.
    followed: Option<String>,
}

impl Route {
    /// `list`: one address or several separated by commas.
    pub fn new(list: &str) -> Result<Self, ClientError> {
        let configured: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if configured.is_empty() {
            return Err(ClientError::BadAddress {
                url: list.to_string(),
                message: "no coordinator address given".to_string(),
            });
        }
        Ok(Route {
            configured,
            index: 0,
            followed: None,
        })
    }

    /// How many addresses are configured.
    pub fn configured(&self) -> usize {
        self.configured.len()
    }

    pub fn current(&self) -> &str {
        self.followed
            .as_deref()
            .unwrap_or(&self.configured[self.index])
    }

    /// Goes to `leader`; false when already there.
    pub fn follow(&mut self, leader: &str) -> bool {
        if self.current() == leader {
            return false;
        }
        self.followed = Some(leader.to_string());
        true
    }

    /// Leaves a followed address for the configured ones, or moves to the next configured
    /// address; false when that is the address already in use (one configured, none followed).
    pub fn advance(&mut self) -> bool {
        if self.followed.take().is_some() {
            return true;
        }
        if self.configured.len() == 1 {
            return false;
        }
        self.index = (self.index + 1) % self.configured.len();
        true
    }

    /// Leaves a followed address and moves to the configured address after the one it
    /// started from (the CLI tries each configured address once).
    pub fn next_configured(&mut self) {
        self.followed = None;
        self.index = (self.index + 1) % self.configured.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UNAVAILABLE naming `leader` in the `lockstep-leader` metadata, as a standby answers.
    fn standby(leader: &str) -> tonic::Status {
        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut().insert(
            crate::LEADER_METADATA,
            leader.parse().expect("metadata value"),
        );
        s
    }

    /// A region whose coordinators answer by address: the leader's name, or a refusal.
    async fn run(
        route: &mut Route,
        answer: impl Fn(&str) -> Result<String, tonic::Status>,
    ) -> (
        Result<String, tonic::Status>,
        Vec<String>,
        Vec<(String, String)>,
    ) {
        let mut calls = Vec::new();
        let mut follows = Vec::new();
        let result = call_following_leader(
            route,
            |addr| {
                calls.push(addr.to_string());
                std::future::ready(answer(addr))
            },
            |from, to| follows.push((from.to_string(), to.to_string())),
        )
        .await;
        (result, calls, follows)
    }

    #[tokio::test]
    async fn a_standby_naming_the_leader_is_followed_and_the_call_made_again_there() {
        // https too, followed as named: the caller's TLS settings (and --tls-domain) apply.
        for scheme in ["http", "https"] {
            let (from, to) = (
                format!("{scheme}://standby:7400"),
                format!("{scheme}://leader.example:7400"),
            );
            let mut route = Route::new(&from).expect("route");
            let (result, calls, follows) = run(&mut route, |addr| {
                if addr == to {
                    Ok("leader".to_string())
                } else {
                    Err(standby(&to))
                }
            })
            .await;
            assert_eq!(result.expect("answered"), "leader");
            assert_eq!(calls, [from.clone(), to.clone()]);
            assert_eq!(follows, [(from, to.clone())]);
            assert_eq!(route.current(), to, "the route stays there");
        }
    }

    #[tokio::test]
    async fn redirects_are_followed_at_most_max_hops_times_in_a_row() {
        // Each coordinator names the next one: an election that never settles.
        let mut route = Route::new("http://c0:7400").expect("route");
        let (result, calls, follows) = run(&mut route, |addr| {
            let n: u32 = addr["http://c".len()..addr.len() - ":7400".len()]
                .parse()
                .expect("number");
            Err(standby(&format!("http://c{}:7400", n + 1)))
        })
        .await;
        let refusal = result.expect_err("no leader answered");
        assert_eq!(
            refusal.leader().as_deref(),
            Some("http://c4:7400"),
            "the last refusal is the answer"
        );
        assert_eq!(calls.len() as u32, MAX_HOPS + 1, "{calls:?}");
        assert_eq!(follows.len() as u32, MAX_HOPS);
        assert_eq!(route.current(), "http://c3:7400");
    }

    #[tokio::test]
    async fn a_refusal_naming_no_other_leader_is_the_answer() {
        for refusal in [
            // Names the address called: nowhere else to go.
            standby("http://a:7400"),
            // UNAVAILABLE without the metadata: the coordinator is down, not a standby.
            tonic::Status::unavailable("connection refused"),
            // Only UNAVAILABLE carries a pointer.
            {
                let mut s = tonic::Status::permission_denied("no token");
                s.metadata_mut().insert(
                    crate::LEADER_METADATA,
                    "http://b:7400".parse().expect("value"),
                );
                s
            },
            // Not an address a client can call.
            standby("b:7400"),
        ] {
            let mut route = Route::new("http://a:7400").expect("route");
            let (result, calls, follows) = run(&mut route, |_| Err(refusal.clone())).await;
            assert_eq!(result.expect_err("refused").code(), refusal.code());
            assert_eq!(calls, ["http://a:7400"], "{refusal:?}");
            assert!(follows.is_empty(), "{refusal:?}");
        }
    }

    #[test]
    fn route_follows_a_leader_and_falls_back_to_the_configured_addresses() {
        let mut r = Route::new("http://a:7400, http://b:7400").expect("route");
        assert_eq!(r.configured(), 2);
        assert_eq!(r.current(), "http://a:7400");
        assert!(r.follow("http://leader:7400"));
        assert!(!r.follow("http://leader:7400"), "already there");
        assert_eq!(r.current(), "http://leader:7400");
        assert!(r.advance(), "back to the configured address in use");
        assert_eq!(r.current(), "http://a:7400");
        assert!(r.advance());
        assert_eq!(r.current(), "http://b:7400");
        assert!(r.advance());
        assert_eq!(r.current(), "http://a:7400");

        r.follow("http://leader:7400");
        r.next_configured();
        assert_eq!(r.current(), "http://b:7400", "past the one it started from");

        let mut one = Route::new("http://a:7400").expect("route");
        assert!(!one.advance(), "one address: nowhere else to go");
        assert!(Route::new(" , ").is_err());
    }
}
