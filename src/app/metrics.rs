//! What the metrics endpoint samples at scrape time besides the proxy's own
//! counters: certificates minted, token-cache hits, the vault's refresh budget.

use std::sync::Arc;

use airlock_certs::LeafCache;
use airlock_proxy::metrics::Sampler;
use airlock_vault::Vault;
use airlock_vault_client::CachedTokenSource;

/// `vault` is the in-process vault, when there is one.
pub fn sampler(
    leaves: Arc<LeafCache>,
    cache: Arc<CachedTokenSource>,
    vault: Option<Arc<Vault>>,
) -> Sampler {
    Box::new(move || {
        let (hits, misses) = cache.stats();
        let mut samples = vec![
            ("certificates_minted", leaves.minted() as i64),
            ("token_cache_hits", hits as i64),
            ("token_cache_misses", misses as i64),
        ];
        if let Some(vault) = &vault {
            let c = vault.refresh_stats();
            samples.extend([
                ("vault_refresh:granted", c.granted as i64),
                (
                    "vault_refresh:refused_by_budget",
                    c.refused_by_budget as i64,
                ),
                ("vault_refresh:failed", c.failed as i64),
                ("vault_refresh:backed_off", c.backed_off as i64),
                ("vault_refresh:probes", c.probes as i64),
                ("vault_refresh:salvaged", c.salvaged as i64),
            ]);
        }
        samples
    })
}
