//! A cache in front of any [`TokenSource`], so the proxy's hot path asks the
//! vault only when a token is new, due, or was invalidated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::{
    AbsentInjection, HostPolicy, Resolved, SandboxId, SandboxStatus, StepUp, TokenError,
    TokenSource,
};

/// A token is used until this long before it expires.
const EXPIRY_MARGIN_SECS: i64 = 30;
/// Upper bound on how long any answer is reused, so revocations reach remote
/// proxies (which cannot see the vault's generation) quickly.
const MAX_AGE: Duration = Duration::from_secs(60);
/// Unknown placeholders are remembered briefly: a sandbox hammering with junk
/// does not reach the vault for each request.
const NEGATIVE_AGE: Duration = Duration::from_secs(5);
/// While the vault cannot be reached, a token it gave is used until it
/// expires (a token without an expiry: this long after the vault last
/// confirmed it), and the vault is asked again this often.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(15 * 60);
const UNREACHABLE_RETRY: Duration = Duration::from_secs(5);

/// How long a host policy is reused.
const POLICY_AGE: Duration = Duration::from_secs(30);
/// Fresh answers kept for the synchronous shortcut, per sandbox; past
/// this (a sandbox trying junk placeholders) its map starts again.
const HOT_PER_SANDBOX: usize = 256;
/// Sandboxes in the shortcut maps; past this they start again.
const HOT_SANDBOXES: usize = 100_000;

/// Fresh answers by sandbox, then by placeholder or host: looked up with
/// borrowed keys, without waiting, so a cache hit allocates no key and
/// boxes no future. The moka caches stay the source of truth (capacity,
/// one vault call per miss); these only mirror their fresh entries.
///
/// Sandbox ids take the fast hasher: the sandbox does not choose its own.
/// Placeholders and hosts, which it does choose, keep SipHash.
struct HotMap<V>(
    dashmap::DashMap<SandboxId, std::collections::HashMap<String, V>, foldhash::fast::RandomState>,
);

impl<V: Clone> HotMap<V> {
    fn new() -> Self {
        Self(dashmap::DashMap::default())
    }

    fn get(&self, sandbox: &SandboxId, key: &str) -> Option<V> {
        self.0.get(sandbox)?.get(key).cloned()
    }

    fn put(&self, sandbox: &SandboxId, key: &str, value: V) {
        if self.0.len() >= HOT_SANDBOXES && !self.0.contains_key(sandbox) {
            self.0.clear();
        }
        let mut map = self.0.entry(sandbox.clone()).or_default();
        if map.len() >= HOT_PER_SANDBOX && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_owned(), value);
    }

    fn remove(&self, sandbox: &SandboxId, key: &str) {
        if let Some(mut map) = self.0.get_mut(sandbox) {
            map.remove(key);
        }
    }
}

#[derive(Clone)]
struct Entry {
    result: Result<Resolved, TokenError>,
    valid_until: Instant,
    generation: u64,
}

pub struct CachedTokenSource {
    inner: Arc<dyn TokenSource>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    tokens: moka::future::Cache<(SandboxId, String), Entry>,
    /// The vault's last answer for each placeholder, when it gave a token:
    /// what serves while the vault cannot be reached.
    last_good: moka::future::Cache<(SandboxId, String), Resolved>,
    /// Sandboxes the vault last said a proxy secret was right for, keyed
    /// by (sandbox id, SHA-256 of the secret): used only while the vault
    /// cannot be reached.
    authenticated: moka::future::Cache<(String, [u8; 32]), SandboxId>,
    hosts: moka::future::Cache<(SandboxId, String), (bool, u64)>,
    /// (policy, generation, when it was asked).
    policies: moka::future::Cache<(SandboxId, String), (HostPolicy, u64, Instant)>,
    hot_tokens: HotMap<Entry>,
    /// (policy, generation, when it was asked).
    hot_policies: HotMap<(HostPolicy, u64, Instant)>,
}

impl Entry {
    fn fresh(&self, generation: u64) -> bool {
        self.generation == generation && self.valid_until > Instant::now()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl CachedTokenSource {
    pub fn new(inner: Arc<dyn TokenSource>) -> Self {
        Self {
            inner,
            hits: Default::default(),
            misses: Default::default(),
            tokens: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(MAX_AGE)
                .build(),
            last_good: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(UNREACHABLE_GRACE)
                .build(),
            authenticated: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(UNREACHABLE_GRACE)
                .build(),
            hosts: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            policies: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(POLICY_AGE)
                .build(),
            hot_tokens: HotMap::new(),
            hot_policies: HotMap::new(),
        }
    }

    /// (answers from the cache, lookups that went to the source).
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// The cache entry for the vault's answer. A vault that cannot be
    /// reached is answered from its last token for the placeholder while
    /// that token is valid; any other answer replaces that token.
    async fn remember(
        &self,
        key: &(SandboxId, String),
        result: Result<Resolved, TokenError>,
        generation: u64,
    ) -> Entry {
        match &result {
            Ok(resolved) => self.last_good.insert(key.clone(), resolved.clone()).await,
            Err(TokenError::Unavailable(_)) => {
                if let Some(last) = self.last_good.get(key).await {
                    let usable = last
                        .expires_at
                        .is_none_or(|exp| exp - unix_now() > EXPIRY_MARGIN_SECS);
                    if usable {
                        return Entry {
                            result: Ok(last),
                            valid_until: Instant::now() + UNREACHABLE_RETRY,
                            generation,
                        };
                    }
                    self.last_good.invalidate(key).await;
                }
            }
            Err(_) => self.last_good.invalidate(key).await,
        }
        self.entry(result, generation)
    }

    fn entry(&self, result: Result<Resolved, TokenError>, generation: u64) -> Entry {
        let now = Instant::now();
        let valid_until = match &result {
            Ok(r) => {
                let left = r
                    .expires_at
                    .map(|exp| exp - unix_now() - EXPIRY_MARGIN_SECS)
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or(MAX_AGE);
                now + left.min(MAX_AGE)
            }
            Err(TokenError::UnknownPlaceholder) => now + NEGATIVE_AGE,
            // Other failures (reconnect needed, vault down) are asked again next time.
            Err(_) => now,
        };
        Entry {
            result,
            valid_until,
            generation,
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for CachedTokenSource {
    fn placeholder_prefix(&self) -> &str {
        self.inner.placeholder_prefix()
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        let key = (sandbox.clone(), placeholder.to_owned());
        let generation = self.inner.generation();
        if let Some(entry) = self.tokens.get(&key).await {
            if entry.fresh(generation) {
                self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.hot_tokens.put(sandbox, placeholder, entry.clone());
                return entry.result;
            }
            self.tokens.invalidate(&key).await;
        }
        self.hot_tokens.remove(sandbox, placeholder);
        self.misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Concurrent misses for one placeholder share one vault call.
        let entry = self
            .tokens
            .get_with_by_ref(&key, async {
                let result = self.inner.resolve(sandbox, placeholder).await;
                self.remember(&key, result, generation).await
            })
            .await;
        if entry.valid_until <= Instant::now() {
            self.tokens.invalidate(&key).await;
        } else if entry.generation == generation {
            self.hot_tokens.put(sandbox, placeholder, entry.clone());
        }
        entry.result
    }

    fn resolve_now(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Option<Result<Resolved, TokenError>> {
        let entry = self.hot_tokens.get(sandbox, placeholder)?;
        if !entry.fresh(self.inner.generation()) {
            return None;
        }
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(entry.result)
    }

    fn host_policy_now(&self, sandbox: &SandboxId, host: &str) -> Option<HostPolicy> {
        let (policy, generation, asked) = self.hot_policies.get(sandbox, host)?;
        (generation == self.inner.generation() && asked.elapsed() < POLICY_AGE).then_some(policy)
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        let key = (sandbox.clone(), host.to_owned());
        let generation = self.inner.generation();
        if let Some((bound, gen)) = self.hosts.get(&key).await {
            if gen == generation {
                return bound;
            }
            self.hosts.invalidate(&key).await;
        }
        // Concurrent misses share one vault call, as for tokens.
        let (bound, _) = self
            .hosts
            .get_with_by_ref(&key, async {
                (self.inner.is_bound_host(sandbox, host).await, generation)
            })
            .await;
        bound
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        // Asked only for bodies too large to keep: not worth a cache.
        self.inner.may_swap_body(sandbox, host).await
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        // Asked on every request to a bound host: cached like `is_bound_host`.
        let key = (sandbox.clone(), host.to_owned());
        let generation = self.inner.generation();
        if let Some((policy, gen, _)) = self.policies.get(&key).await {
            if gen == generation {
                return policy;
            }
            self.policies.invalidate(&key).await;
        }
        // Concurrent misses share one vault call: when a policy's age runs
        // out, every request in flight to the host would otherwise ask the
        // vault, which reads all of the sandbox's bindings for each.
        let (policy, gen, asked) = self
            .policies
            .get_with_by_ref(&key, async {
                let asked = Instant::now();
                let policy = self.inner.host_policy(sandbox, host).await;
                (policy, generation, asked)
            })
            .await;
        if gen == generation {
            self.hot_policies
                .put(sandbox, host, (policy.clone(), gen, asked));
        }
        policy
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        self.inner.step_up(sandbox, connection_id, needed).await
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let mut hashed = [0u8; 32];
        hashed.copy_from_slice(digest.as_ref());
        let key = (sandbox_id.to_owned(), hashed);
        match self.inner.authenticate(sandbox_id, secret).await {
            Ok(id) => {
                self.authenticated.insert(key, id.clone()).await;
                Ok(id)
            }
            Err(TokenError::Unavailable(why)) => match self.authenticated.get(&key).await {
                Some(id) => Ok(id),
                None => Err(TokenError::Unavailable(why)),
            },
            Err(refused) => {
                self.authenticated.invalidate(&key).await;
                Err(refused)
            }
        }
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        let result = self.inner.refresh(sandbox, placeholder, failed).await;
        // The failed token must not be served again from the shortcut.
        self.hot_tokens.remove(sandbox, placeholder);
        let key = (sandbox.clone(), placeholder.to_owned());
        if let Ok(resolved) = &result {
            self.last_good.insert(key.clone(), resolved.clone()).await;
        }
        let entry = self.entry(result.clone(), self.inner.generation());
        self.tokens.insert(key, entry).await;
        result
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<crate::Guarded>, TokenError> {
        self.inner.guarded(sandbox).await
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        // Not cached: a sandbox polling for "connected" must see it at once,
        // and status is asked by people, not on every request.
        self.inner.status(sandbox).await
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// A source that can be replaced while the proxy runs (config reload on
/// SIGHUP); requests in flight keep the one they started with.
pub struct Swappable {
    // Read on every request (the generation), replaced on SIGHUP: an
    // `ArcSwap` read writes nothing other threads share, where a lock's read
    // and an `Arc` clone each wrote the same line from every worker. Boxed
    // twice because `ArcSwap` holds thin pointers only.
    current: arc_swap::ArcSwap<Arc<dyn TokenSource>>,
    swaps: std::sync::atomic::AtomicU64,
    prefix: String,
}

impl Swappable {
    pub fn new(initial: Arc<dyn TokenSource>) -> Self {
        Self {
            prefix: initial.placeholder_prefix().to_owned(),
            current: arc_swap::ArcSwap::from_pointee(initial),
            swaps: Default::default(),
        }
    }

    /// Replaces the source; caches in front of this one drop what they hold.
    pub fn replace(&self, next: Arc<dyn TokenSource>) {
        self.current.store(Arc::new(next));
        self.swaps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The source for a call that awaits: owned, since a borrowed guard
    /// must not be held across an await.
    fn get(&self) -> Arc<dyn TokenSource> {
        Arc::clone(&self.current.load())
    }
}

#[async_trait::async_trait]
impl TokenSource for Swappable {
    fn placeholder_prefix(&self) -> &str {
        &self.prefix
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        self.get().resolve(sandbox, placeholder).await
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.get().is_bound_host(sandbox, host).await
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.get().may_swap_body(sandbox, host).await
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        self.get().host_policy(sandbox, host).await
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        self.get().step_up(sandbox, connection_id, needed).await
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        self.get().authenticate(sandbox_id, secret).await
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        self.get().refresh(sandbox, placeholder, failed).await
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<crate::Guarded>, TokenError> {
        self.get().guarded(sandbox).await
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        self.get().status(sandbox).await
    }

    fn generation(&self) -> u64 {
        self.current
            .load()
            .generation()
            .wrapping_add(self.swaps.load(std::sync::atomic::Ordering::Relaxed) << 32)
    }
}

/// Config-file secrets first, then another source (the vault).
pub struct Layered {
    pub first: Arc<dyn TokenSource>,
    pub second: Arc<dyn TokenSource>,
}

#[async_trait::async_trait]
impl TokenSource for Layered {
    fn placeholder_prefix(&self) -> &str {
        self.first.placeholder_prefix()
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        match self.first.resolve(sandbox, placeholder).await {
            Err(TokenError::UnknownPlaceholder) => self.second.resolve(sandbox, placeholder).await,
            other => other,
        }
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.first.is_bound_host(sandbox, host).await
            || self.second.is_bound_host(sandbox, host).await
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.first.may_swap_body(sandbox, host).await
            || self.second.may_swap_body(sandbox, host).await
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        let mut policy = self.first.host_policy(sandbox, host).await;
        let second = self.second.host_policy(sandbox, host).await;
        policy.required.extend(second.required);
        // Vault HMAC secrets sign too, beside the config file's.
        policy.signers.extend(second.signers);
        // A config secret and a vault binding that would both inject on
        // this host: the request is not guessed, as within one source.
        let injecting = policy
            .inject_absent
            .take()
            .into_iter()
            .chain(second.inject_absent)
            .collect();
        policy.inject_absent = AbsentInjection::sole(injecting, sandbox.as_str(), host);
        policy
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        // Config secrets have no OAuth connection: only the vault can step up.
        self.second.step_up(sandbox, connection_id, needed).await
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        self.second.authenticate(sandbox_id, secret).await
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        match self.first.refresh(sandbox, placeholder, failed).await {
            Err(TokenError::UnknownPlaceholder) => {
                self.second.refresh(sandbox, placeholder, failed).await
            }
            other => other,
        }
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<crate::Guarded>, TokenError> {
        let mut all = self.first.guarded(sandbox).await?;
        all.extend(self.second.guarded(sandbox).await?);
        Ok(all)
    }

    /// Both lists; a variable both name is the first's, as its placeholder is.
    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        let mut status = self.first.status(sandbox).await?;
        let second = self.second.status(sandbox).await?;
        // Only the vault keeps sandbox settings.
        status.consent_wait_secs = status.consent_wait_secs.or(second.consent_wait_secs);
        status.merge(second.credentials);
        Ok(status)
    }

    fn generation(&self) -> u64 {
        self.first
            .generation()
            .wrapping_add(self.second.generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Binding, BindingKind, ExpiredSignal, SwapLocation};
    use secrecy::ExposeSecret;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        generation: AtomicU64,
        /// 0: up; 1: unreachable; 2: the placeholder was revoked.
        answer: AtomicUsize,
        /// Seconds the token it gives has left (0: 3600).
        expires_in: std::sync::atomic::AtomicI64,
        /// Calls of `is_bound_host` and `host_policy`.
        host_calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl TokenSource for Counting {
        fn placeholder_prefix(&self) -> &str {
            "miosa-tok-"
        }
        async fn resolve(
            &self,
            sandbox: &SandboxId,
            placeholder: &str,
        ) -> Result<Resolved, TokenError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if placeholder == "unknown" {
                return Err(TokenError::UnknownPlaceholder);
            }
            match self.answer.load(Ordering::SeqCst) {
                1 => return Err(TokenError::Unavailable("vault down".into())),
                2 => {
                    return Err(TokenError::Revoked {
                        binding: "provider:x".into(),
                    })
                }
                _ => {}
            }
            let expires_in = match self.expires_in.load(Ordering::SeqCst) {
                0 => 3600,
                s => s,
            };
            Ok(Resolved {
                binding: Arc::new(Binding {
                    id: "provider:x".into(),
                    name: "X".into(),
                    sandbox: sandbox.clone(),
                    hosts: vec![],
                    swap_in: SwapLocation::defaults(),
                    kind: BindingKind::OAuth {
                        connection_id: "c".into(),
                    },
                    expired_on: ExpiredSignal::defaults(),
                    inject: Some(crate::Injection::Bearer),
                    on_foreign_body: Default::default(),
                    rules: Default::default(),
                    narrowed: None,
                    scope_signals: Default::default(),
                }),
                token: crate::SharedToken::from("t"),
                expires_at: Some(unix_now() + expires_in),
                signing: None,
            })
        }
        async fn is_bound_host(&self, _: &SandboxId, _: &str) -> bool {
            self.host_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        }
        async fn host_policy(&self, _: &SandboxId, _: &str) -> HostPolicy {
            self.host_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            HostPolicy::default()
        }

        async fn step_up(
            &self,
            _: &SandboxId,
            _: &str,
            _: &[String],
        ) -> Result<StepUp, TokenError> {
            Err(TokenError::Unavailable("no step-up here".into()))
        }
        async fn may_swap_body(&self, _: &SandboxId, _: &str) -> bool {
            true
        }
        async fn authenticate(&self, _: &str, _: &str) -> Result<SandboxId, TokenError> {
            Err(TokenError::BadCredential)
        }
        async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut status = SandboxStatus::empty(sandbox);
            status.merge(vec![crate::CredentialStatus {
                variable: "X".into(),
                kind: crate::CredentialKind::Oauth,
                provider: Some("x".into()),
                connection: None,
                hosts: vec![],
                state: crate::CredentialState::NotConnected,
                scopes: vec![],
                expires_at: None,
                connect_url: None,
            }]);
            Ok(status)
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_replaced_source_answers_and_the_cache_in_front_forgets_the_old_one() {
        let old = Arc::new(Counting {
            generation: AtomicU64::new(7),
            ..Counting::default()
        });
        let swappable = Arc::new(Swappable::new(old.clone()));
        let cache = CachedTokenSource::new(swappable.clone());
        let sandbox = SandboxId::default_sandbox();
        cache.resolve(&sandbox, "p").await.unwrap();
        assert!(cache.resolve_now(&sandbox, "p").is_some());
        let before = swappable.generation();

        // The new source has the same generation number: the swap alone
        // must change what the cache sees.
        let new = Arc::new(Counting {
            generation: AtomicU64::new(7),
            ..Counting::default()
        });
        new.answer.store(2, Ordering::SeqCst);
        swappable.replace(new.clone());
        assert_ne!(swappable.generation(), before);
        assert!(
            cache.resolve_now(&sandbox, "p").is_none(),
            "old answer dropped"
        );
        assert!(matches!(
            cache.resolve(&sandbox, "p").await,
            Err(TokenError::Revoked { .. })
        ));
        assert_eq!(old.calls.load(Ordering::SeqCst), 1);
        assert_eq!(new.calls.load(Ordering::SeqCst), 1);

        // The new source's own changes still show through.
        let after = swappable.generation();
        new.generation.fetch_add(1, Ordering::SeqCst);
        assert_ne!(swappable.generation(), after);
    }

    #[tokio::test]
    async fn the_shortcut_serves_only_fresh_answers() {
        let inner = Arc::new(Counting {
            generation: AtomicU64::new(1),
            ..Counting::default()
        });
        let cache = CachedTokenSource::new(inner.clone());
        let sandbox = SandboxId::default_sandbox();
        assert!(
            cache.resolve_now(&sandbox, "p").is_none(),
            "nothing asked yet"
        );
        cache.resolve(&sandbox, "p").await.unwrap();
        let hit = cache.resolve_now(&sandbox, "p").expect("a fresh answer");
        assert_eq!(hit.unwrap().token.expose_secret(), "t");
        assert!(cache.resolve_now(&SandboxId::new("other"), "p").is_none());
        // A disconnect, revocation or refresh anywhere: not served any more.
        inner.generation.fetch_add(1, Ordering::SeqCst);
        assert!(cache.resolve_now(&sandbox, "p").is_none());
        cache.resolve(&sandbox, "p").await.unwrap();
        assert!(cache.resolve_now(&sandbox, "p").is_some());
        // The token the upstream refused is not served again.
        cache
            .refresh(&sandbox, "p", &SecretString::from("t"))
            .await
            .unwrap();
        assert!(cache.resolve_now(&sandbox, "p").is_none());
        // A token about to expire is not served from the shortcut either.
        inner.expires_in.store(10, Ordering::SeqCst);
        inner.generation.fetch_add(1, Ordering::SeqCst);
        cache.resolve(&sandbox, "p").await.unwrap();
        assert!(cache.resolve_now(&sandbox, "p").is_none());
        // Host policies: fresh ones only, too.
        assert!(cache.host_policy_now(&sandbox, "api.test").is_none());
        cache.host_policy(&sandbox, "api.test").await;
        assert!(cache.host_policy_now(&sandbox, "api.test").is_some());
        inner.generation.fetch_add(1, Ordering::SeqCst);
        assert!(cache.host_policy_now(&sandbox, "api.test").is_none());
    }

    #[tokio::test]
    async fn a_sandbox_trying_junk_placeholders_keeps_the_shortcut_bounded() {
        let inner = Arc::new(Counting::default());
        let cache = CachedTokenSource::new(inner);
        let sandbox = SandboxId::default_sandbox();
        for i in 0..(HOT_PER_SANDBOX + 10) {
            cache.hot_tokens.put(
                &sandbox,
                &format!("junk{i}"),
                cache.entry(Err(TokenError::UnknownPlaceholder), 0),
            );
        }
        let held = cache.hot_tokens.0.get(&sandbox).unwrap().len();
        assert!(held <= HOT_PER_SANDBOX, "{held}");
    }

    #[tokio::test]
    async fn hits_coalesce_and_generation_invalidates() {
        let inner = Arc::new(Counting {
            generation: AtomicU64::new(1),
            ..Counting::default()
        });
        let cache = Arc::new(CachedTokenSource::new(inner.clone()));
        let sandbox = SandboxId::default_sandbox();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let sandbox = sandbox.clone();
                tokio::spawn(async move { cache.resolve(&sandbox, "p").await.is_ok() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        cache.resolve(&sandbox, "p").await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        inner.generation.fetch_add(1, Ordering::SeqCst);
        cache.resolve(&sandbox, "p").await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
        assert!(cache.resolve(&sandbox, "unknown").await.is_err());
        assert!(cache.resolve(&sandbox, "unknown").await.is_err());
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            3,
            "unknown placeholders are cached briefly"
        );
    }

    #[tokio::test]
    async fn concurrent_host_misses_share_one_vault_call() {
        let inner = Arc::new(Counting {
            generation: AtomicU64::new(1),
            ..Counting::default()
        });
        let cache = Arc::new(CachedTokenSource::new(inner.clone()));
        let sandbox = SandboxId::default_sandbox();
        let burst = |policy: bool| {
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let (cache, sandbox) = (cache.clone(), sandbox.clone());
                    tokio::spawn(async move {
                        if policy {
                            cache.host_policy(&sandbox, "api.test").await;
                        } else {
                            assert!(cache.is_bound_host(&sandbox, "api.test").await);
                        }
                    })
                })
                .collect::<Vec<_>>();
            async move {
                for t in tasks {
                    t.await.unwrap();
                }
            }
        };
        burst(true).await;
        assert_eq!(inner.host_calls.load(Ordering::SeqCst), 1, "policy");
        assert!(cache.host_policy_now(&sandbox, "api.test").is_some());
        burst(false).await;
        assert_eq!(inner.host_calls.load(Ordering::SeqCst), 2, "bound host");
        // A change in the vault: asked again, once.
        inner.generation.fetch_add(1, Ordering::SeqCst);
        assert!(cache.host_policy_now(&sandbox, "api.test").is_none());
        burst(true).await;
        burst(false).await;
        assert_eq!(inner.host_calls.load(Ordering::SeqCst), 4);
        assert!(cache.host_policy_now(&sandbox, "api.test").is_some());
    }

    #[tokio::test]
    async fn status_is_asked_every_time_and_layers_merge_first_wins() {
        let inner = Arc::new(Counting {
            generation: AtomicU64::new(1),
            ..Counting::default()
        });
        let cache = CachedTokenSource::new(inner.clone());
        let sandbox = SandboxId::new("sb");
        cache.status(&sandbox).await.unwrap();
        cache.status(&sandbox).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2, "never cached");

        let secret = crate::StaticSecret {
            name: "X".into(),
            value: SecretString::from("real"),
            placeholder: crate::generate_placeholder("miosa-tok-"),
            hosts: vec![],
            swap_in: SwapLocation::defaults(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        };
        let secret2 = crate::StaticSecret {
            name: "A_KEY".into(),
            value: SecretString::from("real2"),
            placeholder: crate::generate_placeholder("miosa-tok-"),
            hosts: vec![],
            swap_in: SwapLocation::defaults(),
            on_foreign_body: Default::default(),
            rules: Default::default(),
            signing: None,
            inject_when_absent: None,
        };
        let layered = Layered {
            first: Arc::new(crate::StaticSecrets::new(
                "miosa-tok-",
                sandbox.clone(),
                vec![secret, secret2],
            )),
            second: inner.clone(),
        };
        let status = layered.status(&sandbox).await.unwrap();
        let names: Vec<_> = status
            .credentials
            .iter()
            .map(|c| (c.variable.as_str(), c.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("A_KEY", crate::CredentialKind::Static),
                ("X", crate::CredentialKind::Static)
            ],
            "sorted; the config file's X hides the vault's"
        );
    }

    #[tokio::test]
    async fn an_unreachable_vault_is_answered_with_the_last_token_until_it_expires() {
        let inner = Arc::new(Counting {
            generation: AtomicU64::new(1),
            ..Counting::default()
        });
        let cache = CachedTokenSource::new(inner.clone());
        let sb = SandboxId::default_sandbox();
        assert!(cache.resolve(&sb, "ph").await.is_ok());
        // The change stream was lost and the vault went away.
        inner.generation.fetch_add(1, Ordering::SeqCst);
        inner.answer.store(1, Ordering::SeqCst);
        let served = cache
            .resolve(&sb, "ph")
            .await
            .expect("the last token serves");
        assert_eq!(served.token.expose_secret(), "t");
        // A token about to expire is not served: the vault's error is.
        let cache = CachedTokenSource::new(inner.clone());
        inner.answer.store(0, Ordering::SeqCst);
        inner
            .expires_in
            .store(EXPIRY_MARGIN_SECS + 1, Ordering::SeqCst);
        assert!(cache.resolve(&sb, "ph").await.is_ok());
        inner.answer.store(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        inner.generation.fetch_add(1, Ordering::SeqCst);
        assert!(matches!(
            cache.resolve(&sb, "ph").await,
            Err(TokenError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_revocation_forgets_the_last_token_before_the_vault_goes_away() {
        let inner = Arc::new(Counting {
            generation: AtomicU64::new(1),
            ..Counting::default()
        });
        let cache = CachedTokenSource::new(inner.clone());
        let sb = SandboxId::default_sandbox();
        assert!(cache.resolve(&sb, "ph").await.is_ok());
        inner.generation.fetch_add(1, Ordering::SeqCst);
        inner.answer.store(2, Ordering::SeqCst);
        assert!(matches!(
            cache.resolve(&sb, "ph").await,
            Err(TokenError::Revoked { .. })
        ));
        inner.generation.fetch_add(1, Ordering::SeqCst);
        inner.answer.store(1, Ordering::SeqCst);
        assert!(matches!(
            cache.resolve(&sb, "ph").await,
            Err(TokenError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn layered_sources_that_both_inject_on_a_host_make_neither_inject() {
        use crate::{HostPattern, Injection, StaticSecret, StaticSecrets};
        let sbx = SandboxId::default_sandbox();
        let source = |name: &str, host: &str| -> Arc<dyn TokenSource> {
            Arc::new(StaticSecrets::new(
                "miosa-tok-",
                sbx.clone(),
                vec![StaticSecret {
                    name: name.into(),
                    value: SecretString::from("real"),
                    placeholder: crate::generate_placeholder("miosa-tok-"),
                    hosts: vec![HostPattern::parse(host).unwrap()],
                    swap_in: SwapLocation::defaults(),
                    on_foreign_body: Default::default(),
                    rules: Default::default(),
                    signing: None,
                    inject_when_absent: Some(Injection::Bearer),
                }],
            ))
        };
        let layered = Layered {
            first: source("A", "*.shared.test"),
            second: source("B", "api.shared.test"),
        };
        let only_first = layered.host_policy(&sbx, "www.shared.test").await;
        assert_eq!(only_first.inject_absent.unwrap().binding, "secret:A");
        assert_eq!(
            layered
                .host_policy(&sbx, "api.shared.test")
                .await
                .inject_absent,
            None
        );
    }

    /// A vault HMAC secret signs beside the config file's: the layered
    /// policy names both (it once named the config file's alone).
    #[tokio::test]
    async fn layered_sources_name_the_signers_of_both() {
        use crate::{
            HmacKeys, HmacSettings, HostPattern, SigningKeys, StaticSecret, StaticSecrets,
        };
        let sbx = SandboxId::default_sandbox();
        let spec = HmacSettings {
            signature_header: Some("X-Sig".into()),
            signature_template: Some("{method}".into()),
            ..Default::default()
        }
        .spec(&mut Vec::new())
        .unwrap();
        let source = |name: &str, placeholder: &str| -> Arc<dyn TokenSource> {
            Arc::new(StaticSecrets::new(
                "miosa-tok-",
                sbx.clone(),
                vec![StaticSecret {
                    name: name.into(),
                    value: SecretString::from("real"),
                    placeholder: placeholder.into(),
                    hosts: vec![HostPattern::parse("api.signed.test").unwrap()],
                    swap_in: SwapLocation::defaults(),
                    on_foreign_body: Default::default(),
                    rules: Default::default(),
                    signing: Some(Arc::new(SigningKeys::Hmac(HmacKeys { spec: spec.clone() }))),
                    inject_when_absent: None,
                }],
            ))
        };
        let layered = Layered {
            first: source("A", "miosa-tok-AAAA"),
            second: source("B", "miosa-tok-BBBB"),
        };
        let policy = layered.host_policy(&sbx, "api.signed.test").await;
        assert_eq!(policy.signers, vec!["miosa-tok-AAAA", "miosa-tok-BBBB"]);
        assert!(layered
            .host_policy(&sbx, "other.test")
            .await
            .signers
            .is_empty());
    }
}
