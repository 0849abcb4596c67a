//! The admin API's bearer token: read from the file the config names, and refused unless it
//! is long and looks random.

use crate::config::NodeConfig;
use anyhow::{Context, Result};

/// Shortest admin token accepted.
const MIN_TOKEN_LEN: usize = 32;
/// Fewest distinct characters in an admin token (a random one has far more).
const MIN_TOKEN_DISTINCT: usize = 10;

/// Reads the admin token from the config's token file: at least [`MIN_TOKEN_LEN`] characters,
/// at least [`MIN_TOKEN_DISTINCT`] of them distinct (`keel genesis` writes 48 random hex
/// digits).
pub(crate) fn read_token(config: &NodeConfig) -> Result<String> {
    let token = std::fs::read_to_string(&config.admin_token_file)
        .with_context(|| {
            format!(
                "config field `admin_token_file`: cannot read {}",
                config.admin_token_file.display()
            )
        })?
        .trim()
        .to_string();
    check_token(&token).map_err(|reason| {
        anyhow::anyhow!(
            "config field `admin_token_file`: {reason} ({}); write a random one, e.g. `openssl rand -hex 24`",
            config.admin_token_file.display()
        )
    })?;
    Ok(token)
}

/// Whether `token` looks random enough to guard the admin API.
fn check_token(token: &str) -> std::result::Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the token has {} characters, at least {MIN_TOKEN_LEN} are needed",
            token.len()
        ));
    }
    let distinct = token
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < MIN_TOKEN_DISTINCT {
        return Err(format!(
            "the token has only {distinct} distinct characters: it does not look random"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_token;

    #[test]
    fn short_or_repetitive_admin_tokens_are_refused() {
        assert!(
            check_token(&"a".repeat(16))
                .unwrap_err()
                .contains("at least 32")
        );
        assert!(
            check_token(&"ab".repeat(20))
                .unwrap_err()
                .contains("distinct")
        );
        assert!(
            check_token(&hex::encode([
                0x5au8, 0x3c, 0x91, 0xe7, 0x08, 0x6b, 0xd2, 0x4f, 0x1e, 0xa0, 0x77, 0xc5, 0x29,
                0xb8, 0x63, 0xf4
            ]))
            .is_ok()
        );
    }
}
