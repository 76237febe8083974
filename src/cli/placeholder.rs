//! `airlock placeholder narrow`: a placeholder narrowed offline (no vault,
//! no proxy) into one that can only do less.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;

use crate::Error;

#[derive(Subcommand)]
pub enum PlaceholderCommand {
    /// Narrow a placeholder (or a narrowed one) with caveats; prints the new one.
    Narrow {
        /// The placeholder to narrow.
        placeholder: String,
        /// `METHODS /path-glob` the requests must match, e.g. 'GET /repos/acme/web/*' (repeat: all must match).
        #[arg(long)]
        allow: Vec<String>,
        /// Lifetime from now: 90s, 10m, 2h, 1d.
        #[arg(long)]
        ttl: Option<String>,
        /// At most this many requests.
        #[arg(long)]
        uses: Option<u32>,
        /// Largest request body, in bytes.
        #[arg(long)]
        body_max: Option<u64>,
        /// The placeholder prefix ([proxy] placeholder_prefix).
        #[arg(long, default_value = airlock_vault_client::DEFAULT_PREFIX)]
        prefix: String,
    },
}

pub fn placeholder(c: PlaceholderCommand) -> Result<(), Error> {
    match c {
        PlaceholderCommand::Narrow {
            placeholder,
            allow,
            ttl,
            uses,
            body_max,
            prefix,
        } => {
            let mut caveats: Vec<String> = allow.iter().map(|a| format!("allow={a}")).collect();
            if let Some(ttl) = ttl {
                let secs = parse_ttl(&ttl).ok_or_else(|| {
                    Error::Usage(format!(
                        "--ttl {ttl:?}: write a number followed by s, m, h or d (10m)"
                    ))
                })?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                caveats.push(format!("expires={}", now + secs));
            }
            caveats.extend(uses.map(|n| format!("uses={n}")));
            caveats.extend(body_max.map(|n| format!("body_max={n}")));
            if caveats.is_empty() {
                return Err(Error::Usage(
                    "give at least one caveat: --allow, --ttl, --uses or --body-max".into(),
                ));
            }
            if !placeholder.starts_with(&prefix) {
                return Err(Error::Usage(format!(
                    "the placeholder does not start with {prefix:?} (set --prefix)"
                )));
            }
            let narrowed = airlock_vault_client::narrow(&prefix, &placeholder, &caveats)
                .map_err(|e| Error::Usage(e.to_string()))?;
            println!("{narrowed}");
            Ok(())
        }
    }
}

fn parse_ttl(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale).filter(|s| *s > 0)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("10m"), Some(600));
        assert_eq!(parse_ttl("1d"), Some(86_400));
        for bad in ["10", "m", "0s", "5w", "-1m", "99999999999999999999d"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }
}
