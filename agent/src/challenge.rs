//! The checks the agent makes on a server's challenge before it signs anything.
//!
//! A signature proves to the server that this agent holds its key, so the agent signs only a
//! challenge that is plausibly fresh and from the right server: it must speak this protocol
//! version, come from the pinned server identity when one is pinned, and carry a time close to
//! the agent's own clock, so that a challenge recorded earlier cannot be replayed. The fields
//! that go into the signed text must also be single lines, so they cannot shift its layout.

use base64::Engine as _;
use protocol::{CHALLENGE_MAX_SKEW_SECS, PROTOCOL_VERSION};

/// Why the agent refuses to sign a challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error(
        "the challenge is for protocol version {theirs}; this agent speaks {PROTOCOL_VERSION}: \
         upgrade the agent or the server"
    )]
    Version { theirs: u32 },
    #[error(
        "the server presents the identity `{presented}`, but this agent is pinned to \
         `{pinned}` (server-id); it is another server, or something in between. Check the \
         agent's server-id and the server URL"
    )]
    ServerId { presented: String, pinned: String },
    #[error(
        "the challenge is dated {timestamp}, {skew} s from this agent's clock ({now}); at \
         most {CHALLENGE_MAX_SKEW_SECS} s are accepted. It may be a replayed challenge, or one \
         of the clocks is wrong: check the time (NTP) on both machines"
    )]
    Stale {
        timestamp: jiff::Timestamp,
        now: jiff::Timestamp,
        skew: i64,
    },
    #[error("the challenge is malformed: {0}")]
    Malformed(String),
}

/// Checks a challenge before the agent signs anything.
pub fn check_challenge(
    protocol: u32,
    server_id: &str,
    nonce: &str,
    timestamp: jiff::Timestamp,
    pinned: Option<&str>,
    now: jiff::Timestamp,
) -> Result<(), ChallengeError> {
    if protocol != PROTOCOL_VERSION {
        return Err(ChallengeError::Version { theirs: protocol });
    }
    // The signed text is line-based; fields that could carry a line break are refused.
    if server_id.is_empty() || !server_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ChallengeError::Malformed(
            "the server identity is empty or not one word of printable ASCII".to_owned(),
        ));
    }
    let nonce_ok = base64::engine::general_purpose::STANDARD
        .decode(nonce)
        .is_ok_and(|bytes| bytes.len() == 32);
    if !nonce_ok {
        return Err(ChallengeError::Malformed(
            "the nonce is not the base64 of 32 bytes".to_owned(),
        ));
    }
    if let Some(pinned) = pinned
        && pinned != server_id
    {
        return Err(ChallengeError::ServerId {
            presented: server_id.to_owned(),
            pinned: pinned.to_owned(),
        });
    }
    let skew = now.duration_since(timestamp).as_secs().abs();
    if skew > CHALLENGE_MAX_SKEW_SECS {
        return Err(ChallengeError::Stale {
            timestamp,
            now,
            skew,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_fresh_challenge_from_the_pinned_server_passes() {
        assert_eq!(
            check_challenge(1, "age1abc", NONCE, at(0), Some("age1abc"), at(299)),
            Ok(())
        );
        assert_eq!(
            check_challenge(1, "age1abc", NONCE, at(0), None, at(-300)),
            Ok(())
        );
    }

    #[test]
    fn challenges_the_agent_must_not_sign_say_why() {
        let err = check_challenge(1, "age1evil", NONCE, at(0), Some("age1good"), at(0));
        assert!(
            matches!(err, Err(ChallengeError::ServerId { .. })),
            "{err:?}"
        );
        let text = err.unwrap_err().to_string();
        assert!(
            text.contains("`age1evil`") && text.contains("`age1good`"),
            "{text}"
        );

        let err = check_challenge(1, "age1abc", NONCE, at(0), None, at(3600)).unwrap_err();
        assert!(
            matches!(err, ChallengeError::Stale { skew: 3600, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("replayed challenge"), "{err}");

        let err = check_challenge(2, "age1abc", NONCE, at(0), None, at(0)).unwrap_err();
        assert_eq!(err, ChallengeError::Version { theirs: 2 });

        let err = check_challenge(1, "age1abc\nx", NONCE, at(0), None, at(0)).unwrap_err();
        assert!(matches!(err, ChallengeError::Malformed(_)), "{err:?}");
        let err = check_challenge(1, "age1abc", "bm9uY2U=", at(0), None, at(0)).unwrap_err();
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }
}
