//! Which real tokens each sandbox could obtain, so the response firewall can
//! guard all of them on every response, not only those the current request
//! carried: the sandbox's bindings' current tokens (asked of the token
//! source), plus every token this proxy swapped or got from a refresh, kept
//! until it expires. An upstream that stored a token from an earlier request,
//! or an old token after a refresh, still cannot hand it to the sandbox.
//!
//! The ledger wraps the proxy's [`TokenSource`], so every token that passes
//! through a resolve or refresh is recorded before it can be sent anywhere.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use airlock_vault_client::{
    narrow_id, Caveat, ExposeSecret, Guarded, HostPolicy, NarrowError, Narrowed, NarrowedBy,
    Resolved, SandboxId, SandboxStatus, SecretString, StepUp, TokenError, TokenSource,
};
use dashmap::DashMap;

use crate::firewall::{self, Firewall};

/// How long the source's list is trusted before it is asked again (in the
/// background; requests keep the firewall they have meanwhile).
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// Narrowings with a `uses=` caveat counted at once (per process).
const MAX_COUNTED_NARROWINGS: usize = 100_000;
/// Verified narrowings kept at once (per process); past it, the cache starts over.
const MAX_VERIFIED_NARROWINGS: usize = 10_000;
/// Firewalls kept per sandbox for the sets of narrowed placeholders its
/// requests carried (building one costs as much as a whole request).
const MAX_NARROWED_FIREWALLS: usize = 256;
/// Up to this many tokens, a sandbox's firewall is built on the async worker
/// that loads its list; more go to a blocking thread (building takes about
/// 0.4 ms a token: 0.4 s for 1 000).
const BUILD_INLINE_UP_TO: usize = 16;
/// A previous token whose expiry is unknown is guarded this long after it was
/// last seen.
const KEEP_UNKNOWN_EXPIRY: i64 = 24 * 3600;

pub struct TokenLedger {
    inner: Arc<dyn TokenSource>,
    /// Looked up three times a request; sandboxes do not choose their ids,
    /// so the fast hasher (placeholders, which they choose, keep SipHash).
    sandboxes: DashMap<SandboxId, Arc<SandboxLedger>, foldhash::fast::RandomState>,
    /// Requests made under each `uses=N` caveat, by the chain signature
    /// right after it (shared by every further narrowing). Per process.
    narrowed_uses: DashMap<[u8; 32], u32>,
    /// Narrowed placeholders whose chain verified, by sandbox and placeholder:
    /// decoding and verifying cost as much as the rest of a request. Expiry
    /// and uses are still checked on every request.
    verified: DashMap<(SandboxId, String), Arc<VerifiedNarrowing>>,
}

struct VerifiedNarrowing {
    root: String,
    caveats: Vec<Caveat>,
}

type NarrowedFirewalls = HashMap<Vec<String>, Arc<Firewall>>;

#[derive(Default)]
struct SandboxLedger {
    state: RwLock<LedgerState>,
    /// Firewalls for requests made with narrowed placeholders, by the
    /// placeholders (sorted); built for one `LedgerState::version`.
    narrowed_firewalls: std::sync::Mutex<(u64, NarrowedFirewalls)>,
    /// One firewall build at a time, done outside `state`'s lock: building
    /// for 1 000 tokens takes ~0.4 s, and requests whose tokens the current
    /// firewall guards keep going meanwhile.
    building: std::sync::Mutex<()>,
    /// One load from the source at a time.
    loading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct LedgerState {
    /// By SHA-256 of the token: the token itself is only in `Entry`. Keys
    /// no one can choose: the fast hasher.
    entries: HashMap<[u8; 32], Entry, foldhash::fast::RandomState>,
    /// The key of the token last recorded for each placeholder: a request
    /// finds its token known without hashing it (SHA-256 was most of the
    /// cost of recording a known token on every request).
    latest: HashMap<String, [u8; 32]>,
    firewall: Option<Arc<Firewall>>,
    /// Bumped whenever `entries` changes: firewalls built from older entries
    /// are stale.
    version: u64,
    /// The `version` whose entries `firewall` was built from.
    built: u64,
    /// When the source's list was last read, and at which generation.
    loaded: Option<(Instant, u64)>,
}

struct Entry {
    placeholder: String,
    token: SecretString,
    /// Unix seconds after which the token is no longer guarded; `None` while
    /// the source lists it as current with no expiry.
    keep_until: Option<i64>,
    /// The `version` that added it: the firewall guards it once `built`
    /// reaches this.
    since: u64,
}

fn fingerprint(token: &impl ExposeSecret<str>) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, token.expose_secret().as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl LedgerState {
    /// `record` would change nothing and the firewall already guards the
    /// token, at least as long. Looked up by the placeholder it was last
    /// recorded for: false (the slow path, which hashes the token) when that
    /// was another token.
    fn knows(
        &self,
        placeholder: &str,
        token: &impl ExposeSecret<str>,
        expires_at: Option<i64>,
    ) -> bool {
        let Some(entry) = self
            .latest
            .get(placeholder)
            .and_then(|k| self.entries.get(k))
        else {
            return false;
        };
        entry.since <= self.built
            && entry.token.expose_secret() == token.expose_secret()
            && match (entry.keep_until, expires_at) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(kept), Some(wanted)) => kept >= wanted,
            }
    }

    /// Adds or updates; true when the set of guarded tokens changed.
    fn record(
        &mut self,
        placeholder: &str,
        token: &impl ExposeSecret<str>,
        expires_at: Option<i64>,
    ) -> bool {
        if token.expose_secret().is_empty() {
            return false;
        }
        let key = fingerprint(token);
        if self.latest.get(placeholder) != Some(&key) {
            self.latest.insert(placeholder.to_owned(), key);
        }
        match self.entries.get_mut(&key) {
            Some(entry) => {
                entry.keep_until = match (entry.keep_until, expires_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                false
            }
            None => {
                self.version += 1;
                self.entries.insert(
                    key,
                    Entry {
                        placeholder: placeholder.to_owned(),
                        token: SecretString::from(token.expose_secret()),
                        keep_until: expires_at,
                        since: self.version,
                    },
                );
                true
            }
        }
    }

    /// The token is recorded but the firewall in place was built before it.
    fn awaits_build(&self, token: &impl ExposeSecret<str>) -> bool {
        self.entries
            .get(&fingerprint(token))
            .is_some_and(|e| e.since > self.built)
    }

    /// Drops the entries past their `keep_until`.
    fn drop_expired(&mut self) {
        let now = unix_now();
        let before = self.entries.len();
        self.entries
            .retain(|_, e| e.keep_until.is_none_or(|until| until >= now));
        let entries = &self.entries;
        self.latest.retain(|_, key| entries.contains_key(key));
        if self.entries.len() != before {
            self.version += 1;
        }
    }

    /// What a firewall for the current entries is built from, with their
    /// version; `None` when `firewall` is that firewall already.
    fn unbuilt(&self) -> Option<(u64, Vec<firewall::Guarded>)> {
        (self.built != self.version).then(|| (self.version, self.guarded(&HashMap::new())))
    }

    /// Every entry as the firewall guards it; a token in `replaced` comes
    /// back as the placeholder given there.
    fn guarded(&self, replaced: &HashMap<[u8; 32], &str>) -> Vec<firewall::Guarded> {
        self.entries
            .iter()
            .map(|(key, e)| firewall::Guarded {
                token: e.token.clone(),
                placeholder: replaced
                    .get(key)
                    .map_or_else(|| e.placeholder.clone(), |p| (*p).to_owned()),
            })
            .collect()
    }

    /// A fresh list from the source: entries it no longer lists become
    /// previous tokens, guarded until they expire.
    fn merge_current(&mut self, current: &[Guarded]) {
        let listed: std::collections::HashSet<[u8; 32]> =
            current.iter().map(|g| fingerprint(&g.token)).collect();
        let now = unix_now();
        for (key, entry) in self.entries.iter_mut() {
            if !listed.contains(key) && entry.keep_until.is_none() {
                entry.keep_until = Some(now + KEEP_UNKNOWN_EXPIRY);
            }
        }
        for g in current {
            self.record(&g.placeholder, &g.token, g.expires_at);
        }
    }
}

impl SandboxLedger {
    /// Brings `state.firewall` up to the current entries, building it
    /// without holding `state`'s lock; returns once a firewall that guards
    /// every entry recorded before the call is in place.
    fn bring_firewall_up_to_date(&self) {
        let _one = self.building.lock().unwrap_or_else(|e| e.into_inner());
        let Some((version, guarded)) = self.state.read().expect("ledger lock").unbuilt() else {
            return;
        };
        let firewall = Firewall::new(guarded).map(Arc::new);
        let mut state = self.state.write().expect("ledger lock");
        // Builds are one at a time: nothing newer was put in meanwhile.
        state.firewall = firewall;
        state.built = version;
    }
}

impl TokenLedger {
    pub fn new(inner: Arc<dyn TokenSource>) -> Self {
        Self {
            inner,
            sandboxes: DashMap::default(),
            narrowed_uses: DashMap::new(),
            verified: DashMap::new(),
        }
    }

    /// The placeholder of `sandbox` a narrowed placeholder was made from,
    /// found by its id among the placeholders the source lists.
    async fn narrowing_root(&self, sandbox: &SandboxId, narrowed: &Narrowed) -> Option<String> {
        let find = |ledger: &SandboxLedger| {
            let state = ledger.state.read().expect("ledger lock");
            state
                .entries
                .values()
                .map(|e| &e.placeholder)
                .find(|p| narrow_id(p) == narrowed.id)
                .cloned()
        };
        let ledger = self.ledger(sandbox);
        if let Some(root) = find(&ledger) {
            return Some(root);
        }
        // Ask the source again only when the list is stale: a body full of
        // made-up narrowings must not become a vault call each.
        let generation = self.inner.generation();
        let fresh = ledger
            .state
            .read()
            .expect("ledger lock")
            .loaded
            .is_some_and(|(at, g)| g == generation && at.elapsed() < RELOAD_EVERY);
        if fresh {
            return None;
        }
        self.load(sandbox, true).await;
        find(&ledger)
    }

    /// Whether `placeholder` is one of the placeholders `sandbox`'s list holds.
    fn holds_placeholder(&self, sandbox: &SandboxId, placeholder: &str) -> bool {
        let ledger = self.ledger(sandbox);
        let state = ledger.state.read().expect("ledger lock");
        state.entries.values().any(|e| e.placeholder == placeholder)
    }

    /// A narrowed placeholder: its root resolved, its chain verified, its
    /// expiry and (with `count_use`) its use limits applied; the binding
    /// comes back carrying the caveats about the request itself.
    async fn resolve_narrowed(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        count_use: bool,
        resolve_root: impl AsyncFnOnce(String) -> Result<Resolved, TokenError>,
    ) -> Result<Resolved, TokenError> {
        let key = (sandbox.clone(), placeholder.to_owned());
        let cached = self.verified.get(&key).map(|v| v.clone());
        // A verified narrowing holds while its root is still the sandbox's.
        let cached = cached.filter(|v| self.holds_placeholder(sandbox, &v.root));
        let (verified, parent) = match cached {
            Some(verified) => {
                let parent = resolve_root(verified.root.clone()).await?;
                (verified, parent)
            }
            None => {
                let narrowed = placeholder
                    .strip_prefix(self.inner.placeholder_prefix())
                    .and_then(|run| Narrowed::decode(run).ok())
                    .ok_or(TokenError::UnknownPlaceholder)?;
                let root = self
                    .narrowing_root(sandbox, &narrowed)
                    .await
                    .ok_or(TokenError::UnknownPlaceholder)?;
                let parent = resolve_root(root.clone()).await?;
                let caveats = narrowed
                    .verify(&root)
                    .map_err(|reason| TokenError::Narrowed {
                        binding: parent.binding.id.clone(),
                        reason: reason.to_string(),
                    })?;
                let verified = Arc::new(VerifiedNarrowing { root, caveats });
                if self.verified.len() >= MAX_VERIFIED_NARROWINGS {
                    self.verified.clear();
                }
                self.verified.insert(key, verified.clone());
                (verified, parent)
            }
        };
        self.apply_caveats(&verified, placeholder, parent, count_use)
    }

    /// [`Self::resolve_narrowed`] without waiting: a narrowing verified
    /// before whose root the cache answers at once; `None` otherwise.
    fn resolve_narrowed_now(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Option<Result<Resolved, TokenError>> {
        let key = (sandbox.clone(), placeholder.to_owned());
        let verified = self.verified.get(&key).map(|v| v.clone())?;
        if !self.holds_placeholder(sandbox, &verified.root) {
            return None;
        }
        let parent = match self.inner.resolve_now(sandbox, &verified.root)? {
            Ok(parent) => parent,
            Err(error) => return Some(Err(error)),
        };
        Some(self.apply_caveats(&verified, placeholder, parent, true))
    }

    /// The caveats of a verified narrowing applied: expiry and (with
    /// `count_use`) uses now, the rest carried on the binding for the
    /// request itself.
    fn apply_caveats(
        &self,
        verified: &VerifiedNarrowing,
        placeholder: &str,
        parent: Resolved,
        count_use: bool,
    ) -> Result<Resolved, TokenError> {
        let caveats = &verified.caveats;
        let refuse = |reason: NarrowError| TokenError::Narrowed {
            binding: parent.binding.id.clone(),
            reason: reason.to_string(),
        };
        let now = unix_now();
        let mut narrowed_by = NarrowedBy {
            placeholder: placeholder.to_owned(),
            allows: Vec::new(),
            body_max: None,
        };
        for caveat in caveats {
            match caveat {
                Caveat::Expires(at) if now > *at => {
                    return Err(refuse(NarrowError::Expired { at: *at }))
                }
                Caveat::Allow { text, rules } => {
                    narrowed_by.allows.push((text.clone(), rules.clone()))
                }
                Caveat::BodyMax(max) => {
                    narrowed_by.body_max = Some(narrowed_by.body_max.map_or(*max, |m| m.min(*max)))
                }
                _ => {}
            }
        }
        if count_use {
            for caveat in caveats {
                if let Caveat::Uses { limit, counter } = caveat {
                    // Bounded memory: past the cap, new counted narrowings are refused.
                    if self.narrowed_uses.len() >= MAX_COUNTED_NARROWINGS
                        && !self.narrowed_uses.contains_key(counter)
                    {
                        return Err(refuse(NarrowError::TooManyCounted {
                            limit: MAX_COUNTED_NARROWINGS,
                        }));
                    }
                    let mut used = self.narrowed_uses.entry(*counter).or_insert(0);
                    if *used >= *limit {
                        return Err(refuse(NarrowError::UsesSpent { limit: *limit }));
                    }
                    *used += 1;
                }
            }
        }
        let mut binding = (*parent.binding).clone();
        binding.narrowed = Some(Arc::new(narrowed_by));
        Ok(Resolved {
            binding: Arc::new(binding),
            token: parent.token,
            expires_at: parent.expires_at,
            signing: parent.signing,
        })
    }

    /// The firewall for one request made with narrowed placeholders: a
    /// token they stand for comes back as the narrowed placeholder, never as
    /// the root one (which would undo the narrowing).
    pub fn firewall_for_narrowed(
        &self,
        sandbox: &SandboxId,
        narrowed: &[(String, SecretString)],
    ) -> Option<Arc<Firewall>> {
        let ledger = self.ledger(sandbox);
        let mut key: Vec<String> = narrowed.iter().map(|(p, _)| p.clone()).collect();
        key.sort_unstable();
        key.dedup();
        let replaced: HashMap<[u8; 32], &str> = narrowed
            .iter()
            .map(|(placeholder, token)| (fingerprint(token), placeholder.as_str()))
            .collect();
        let (version, guarded) = {
            let state = ledger.state.read().expect("ledger lock");
            let cached = ledger
                .narrowed_firewalls
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if cached.0 == state.version {
                if let Some(firewall) = cached.1.get(&key) {
                    return Some(firewall.clone());
                }
            }
            (state.version, state.guarded(&replaced))
        };
        // Built outside the lock, like the sandbox's own firewall.
        let firewall = Firewall::new(guarded).map(Arc::new)?;
        let mut cached = ledger
            .narrowed_firewalls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cached.0 > version {
            return Some(firewall);
        }
        if cached.0 != version || cached.1.len() >= MAX_NARROWED_FIREWALLS {
            *cached = (version, HashMap::new());
        }
        cached.1.insert(key, firewall.clone());
        Some(firewall)
    }

    fn ledger(&self, sandbox: &SandboxId) -> Arc<SandboxLedger> {
        if let Some(l) = self.sandboxes.get(sandbox) {
            return l.clone();
        }
        self.sandboxes.entry(sandbox.clone()).or_default().clone()
    }

    /// [`Self::record_async`] waiting on the caller's thread, whatever the
    /// list's length (tests drive the ledger from plain threads).
    #[cfg(test)]
    fn record(&self, sandbox: &SandboxId, placeholder: &str, resolved: &Resolved) {
        if let Some((ledger, _)) = self.note(sandbox, placeholder, resolved) {
            ledger.bring_firewall_up_to_date();
        }
    }

    /// Records a token the proxy is about to use for `sandbox`; returns once
    /// a firewall guards it (a long list's build waits on a blocking thread,
    /// not on the caller's worker).
    async fn record_async(&self, sandbox: &SandboxId, placeholder: &str, resolved: &Resolved) {
        if let Some((ledger, tokens)) = self.note(sandbox, placeholder, resolved) {
            build_firewall(ledger, tokens).await;
        }
    }

    /// Records the token; the sandbox's ledger and its token count when the
    /// token may leave only once a firewall that guards it is built.
    fn note(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        resolved: &Resolved,
    ) -> Option<(Arc<SandboxLedger>, usize)> {
        let ledger = self.ledger(sandbox);
        // A token that expires is still guarded a while after: clocks differ.
        let keep = resolved.expires_at.map(|e| e + 300);
        // Every request records its token: most find it known, under the
        // shared lock, and do not queue for the exclusive one. (Signing
        // keys carry more secrets than the token: always the full path.)
        if resolved.signing.is_none()
            && ledger
                .state
                .read()
                .expect("ledger lock")
                .knows(placeholder, &resolved.token, keep)
        {
            return None;
        }
        let awaits_build = {
            let mut state = ledger.state.write().expect("ledger lock");
            let mut changed = state.record(placeholder, &resolved.token, keep);
            // A signing binding's other real keys: guarded from the first
            // request that uses them, not only once the source's list is
            // read again.
            let others = signing_secrets(placeholder, resolved);
            for (ph, key) in &others {
                changed |= state.record(ph, key, keep);
            }
            if changed {
                state.drop_expired();
            }
            let awaits = state.awaits_build(&resolved.token)
                || others.iter().any(|(_, key)| state.awaits_build(key));
            awaits.then_some(state.entries.len())
        };
        // The token leaves once a firewall guards it: the caller waits for a
        // build under way (perhaps another request's), and only a request
        // whose token is not guarded yet does.
        awaits_build.map(|tokens| (ledger, tokens))
    }

    /// The firewall for everything `sandbox` could obtain; `None` when it
    /// has no token at all. The first call per sandbox asks the source and
    /// waits; later calls reload in the background.
    pub async fn firewall(self: &Arc<Self>, sandbox: &SandboxId) -> Option<Arc<Firewall>> {
        let ledger = self.ledger(sandbox);
        let generation = self.inner.generation();
        let fresh = |state: &LedgerState| {
            state
                .loaded
                .is_some_and(|(at, g)| g == generation && at.elapsed() < RELOAD_EVERY)
        };
        {
            let state = ledger.state.read().expect("ledger lock");
            if fresh(&state) {
                return state.firewall.clone();
            }
            if state.loaded.is_some() {
                let this = self.clone();
                let sandbox = sandbox.clone();
                let current = state.firewall.clone();
                drop(state);
                tokio::spawn(async move { this.load(&sandbox, false).await });
                return current;
            }
        }
        self.load(sandbox, true).await;
        let state = ledger.state.read().expect("ledger lock");
        state.firewall.clone()
    }

    /// The firewall `sandbox` has now, without asking whether its list is
    /// fresh: for a request that asked [`Self::firewall`] already (the tokens
    /// it recorded since are in it: recording waits for their build).
    pub fn current_firewall(&self, sandbox: &SandboxId) -> Option<Arc<Firewall>> {
        let ledger = self.sandboxes.get(sandbox)?;
        let state = ledger.state.read().expect("ledger lock");
        state.firewall.clone()
    }

    /// Reads the source's list. With `wait`, a load already under way is
    /// waited for (its result is what the caller needs).
    async fn load(&self, sandbox: &SandboxId, wait: bool) {
        let ledger = self.ledger(sandbox);
        let Ok(_loading) = ledger.loading.try_lock() else {
            if wait {
                let _ = ledger.loading.lock().await;
            }
            return;
        };
        let generation = self.inner.generation();
        let listed = self.inner.guarded(sandbox).await;
        let tokens = {
            let mut state = ledger.state.write().expect("ledger lock");
            match listed {
                Ok(current) => {
                    state.merge_current(&current);
                    state.loaded = Some((Instant::now(), generation));
                }
                Err(error) => {
                    // Keep guarding what is known; ask again on the next request.
                    tracing::warn!(%sandbox, %error, "could not list the sandbox's tokens for the response firewall");
                    if state.loaded.is_none() {
                        state.loaded = Some((Instant::now() - RELOAD_EVERY, generation));
                    }
                }
            }
            state.drop_expired();
            state.entries.len()
        };
        // Built while `_loading` is held: a caller waiting for this load
        // gets the firewall it built.
        build_firewall(ledger.clone(), tokens).await;
    }
}

#[async_trait::async_trait]
impl TokenSource for TokenLedger {
    fn placeholder_prefix(&self) -> &str {
        self.inner.placeholder_prefix()
    }

    fn resolve_now(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Option<Result<Resolved, TokenError>> {
        let (answer, narrowed) = match self.inner.resolve_now(sandbox, placeholder)? {
            // Perhaps narrowed (else `resolve` says it is unknown).
            Err(TokenError::UnknownPlaceholder) => {
                (self.resolve_narrowed_now(sandbox, placeholder)?, true)
            }
            other => (other, false),
        };
        if let Ok(resolved) = &answer {
            if let Some((ledger, tokens)) = self.note(sandbox, placeholder, resolved) {
                // A long list's build is not waited for on this worker: the
                // async path waits for it on a blocking thread. (A narrowed
                // answer has counted its use already: built here.)
                if tokens > BUILD_INLINE_UP_TO && !narrowed {
                    return None;
                }
                ledger.bring_firewall_up_to_date();
            }
        }
        Some(answer)
    }

    fn host_policy_now(&self, sandbox: &SandboxId, host: &str) -> Option<HostPolicy> {
        self.inner.host_policy_now(sandbox, host)
    }

    async fn resolve(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
    ) -> Result<Resolved, TokenError> {
        let resolved = match self.inner.resolve(sandbox, placeholder).await {
            Err(TokenError::UnknownPlaceholder) => {
                let inner = &self.inner;
                self.resolve_narrowed(sandbox, placeholder, true, async |root: String| {
                    inner.resolve(sandbox, &root).await
                })
                .await?
            }
            other => other?,
        };
        self.record_async(sandbox, placeholder, &resolved).await;
        Ok(resolved)
    }

    async fn is_bound_host(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.inner.is_bound_host(sandbox, host).await
    }

    async fn host_policy(&self, sandbox: &SandboxId, host: &str) -> HostPolicy {
        self.inner.host_policy(sandbox, host).await
    }

    async fn step_up(
        &self,
        sandbox: &SandboxId,
        connection_id: &str,
        needed: &[String],
    ) -> Result<StepUp, TokenError> {
        self.inner.step_up(sandbox, connection_id, needed).await
    }

    async fn may_swap_body(&self, sandbox: &SandboxId, host: &str) -> bool {
        self.inner.may_swap_body(sandbox, host).await
    }

    async fn authenticate(&self, sandbox_id: &str, secret: &str) -> Result<SandboxId, TokenError> {
        self.inner.authenticate(sandbox_id, secret).await
    }

    async fn refresh(
        &self,
        sandbox: &SandboxId,
        placeholder: &str,
        failed: &SecretString,
    ) -> Result<Resolved, TokenError> {
        let resolved = match self.inner.refresh(sandbox, placeholder, failed).await {
            // A replay with a narrowed placeholder: its use was counted already.
            Err(TokenError::UnknownPlaceholder) => {
                let inner = &self.inner;
                self.resolve_narrowed(sandbox, placeholder, false, async |root: String| {
                    inner.refresh(sandbox, &root, failed).await
                })
                .await?
            }
            other => other?,
        };
        self.record_async(sandbox, placeholder, &resolved).await;
        Ok(resolved)
    }

    async fn guarded(&self, sandbox: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
        self.inner.guarded(sandbox).await
    }

    async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
        // Holds no token: nothing to record.
        self.inner.status(sandbox).await
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// Brings the sandbox's firewall up to date. A build for many tokens is CPU
/// for up to a second: off the async workers. A small one costs less than
/// the hand-off (and a gateway loading thousands of sandboxes at once would
/// start as many threads).
async fn build_firewall(ledger: Arc<SandboxLedger>, tokens: usize) {
    if tokens > BUILD_INLINE_UP_TO {
        let _ = tokio::task::spawn_blocking(move || ledger.bring_firewall_up_to_date()).await;
    } else {
        ledger.bring_firewall_up_to_date();
    }
}

/// (placeholder, real key) of a signing binding's keys besides its token:
/// an AWS secret access key and session token; an OAuth 1.0a connection's
/// consumer key and secret and token secret.
fn signing_secrets(placeholder: &str, resolved: &Resolved) -> Vec<(String, SecretString)> {
    match resolved.signing.as_deref() {
        Some(airlock_vault_client::SigningKeys::OAuth1(k)) => {
            let p = airlock_vault_client::oauth1::placeholders(placeholder);
            vec![
                (p.consumer_key, k.consumer_key.clone()),
                (p.consumer_secret, k.consumer_secret.clone()),
                (p.token_secret, k.token_secret.clone()),
            ]
        }
        Some(airlock_vault_client::SigningKeys::AwsSigV4(k)) => {
            let mut out = vec![(
                k.placeholder_secret.expose_secret().to_owned(),
                k.secret_access_key.clone(),
            )];
            if let Some(t) = &k.session_token {
                if !t.token.expose_secret().is_empty() {
                    out.push((t.placeholder.clone(), t.token.clone()));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_vault_client::{Binding, BindingKind, SharedToken};
    use std::sync::Mutex;

    /// A source whose current token can be changed, like a refreshed connection.
    struct Rotating {
        current: Mutex<String>,
        listed: std::sync::atomic::AtomicUsize,
        /// Tokens of other bindings its list holds beside the current one.
        extra: usize,
        /// Answers `resolve_now` too, as a cache does.
        at_once: bool,
    }

    /// A ledger over a `Rotating` source whose list it has read once.
    async fn listed_ledger() -> (Arc<Rotating>, Arc<TokenLedger>, SandboxId) {
        let source = Arc::new(Rotating {
            current: Mutex::new("tok_CUR_0123456789abcdef".into()),
            listed: Default::default(),
            extra: 0,
            at_once: false,
        });
        let ledger = Arc::new(TokenLedger::new(source.clone()));
        let sandbox = SandboxId::default_sandbox();
        ledger.firewall(&sandbox).await.expect("the list is read");
        (source, ledger, sandbox)
    }

    /// The sandbox's firewall guards both the first and the new token.
    async fn guards_current_and_new(ledger: &Arc<TokenLedger>, sandbox: &SandboxId) {
        let fw = ledger.firewall(sandbox).await.expect("a firewall");
        assert_eq!(
            fw.scrub(b"tok_CUR_0123456789abcdef tok_NEW_0123456789abcdef")
                .as_ref(),
            b"miosa-tok-PH miosa-tok-PH"
        );
    }

    impl Rotating {
        fn resolved(&self, sandbox: &SandboxId) -> Resolved {
            Resolved {
                binding: Arc::new(Binding {
                    id: "provider:acme".into(),
                    name: "ACME_TOKEN".into(),
                    sandbox: sandbox.clone(),
                    hosts: vec![],
                    swap_in: Default::default(),
                    kind: BindingKind::OAuth {
                        connection_id: "c1".into(),
                    },
                    expired_on: vec![],
                    inject: None,
                    on_foreign_body: Default::default(),
                    rules: Default::default(),
                    narrowed: None,
                    scope_signals: Default::default(),
                }),
                token: SharedToken::from(self.current.lock().unwrap().clone()),
                expires_at: Some(unix_now() + 3600),
                signing: None,
            }
        }
    }

    #[async_trait::async_trait]
    impl TokenSource for Rotating {
        fn placeholder_prefix(&self) -> &str {
            "miosa-tok-"
        }
        fn resolve_now(
            &self,
            sandbox: &SandboxId,
            placeholder: &str,
        ) -> Option<Result<Resolved, TokenError>> {
            (self.at_once && placeholder == "miosa-tok-PH").then(|| Ok(self.resolved(sandbox)))
        }
        async fn resolve(
            &self,
            sandbox: &SandboxId,
            placeholder: &str,
        ) -> Result<Resolved, TokenError> {
            if placeholder != "miosa-tok-PH" {
                return Err(TokenError::UnknownPlaceholder);
            }
            Ok(self.resolved(sandbox))
        }
        async fn is_bound_host(&self, _: &SandboxId, _: &str) -> bool {
            true
        }
        async fn host_policy(&self, _: &SandboxId, _: &str) -> HostPolicy {
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
        async fn may_swap_body(&self, _: &SandboxId, host: &str) -> bool {
            host == "bodies.test"
        }
        async fn authenticate(&self, _: &str, _: &str) -> Result<SandboxId, TokenError> {
            Err(TokenError::BadCredential)
        }
        async fn status(&self, sandbox: &SandboxId) -> Result<SandboxStatus, TokenError> {
            Ok(SandboxStatus::empty(sandbox))
        }
        async fn guarded(&self, _: &SandboxId) -> Result<Vec<Guarded>, TokenError> {
            self.listed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let current = Guarded {
                placeholder: "miosa-tok-PH".into(),
                token: SecretString::from(self.current.lock().unwrap().clone()),
                expires_at: Some(unix_now() + 3600),
            };
            let others = (0..self.extra).map(|i| Guarded {
                placeholder: format!("miosa-tok-OTHER{i}"),
                token: SecretString::from(format!("tok_other_{i:04}_0123456789abcdef")),
                expires_at: None,
            });
            Ok(std::iter::once(current).chain(others).collect())
        }
    }

    #[tokio::test]
    async fn answers_what_the_source_says_about_body_swaps() {
        let source = Arc::new(Rotating {
            current: Mutex::new("tok_0123456789abcdef".into()),
            listed: Default::default(),
            extra: 0,
            at_once: false,
        });
        let ledger = TokenLedger::new(source);
        let sandbox = SandboxId::default_sandbox();
        // Large bodies keep their Content-Length only when this says no.
        assert!(!ledger.may_swap_body(&sandbox, "api.test").await);
        assert!(ledger.may_swap_body(&sandbox, "bodies.test").await);
    }

    #[tokio::test]
    async fn a_signing_bindings_secret_and_session_token_are_guarded_from_first_use() {
        let source = Arc::new(Rotating {
            current: Mutex::new("tok_0123456789abcdef".into()),
            listed: Default::default(),
            extra: 0,
            at_once: false,
        });
        let ledger = Arc::new(TokenLedger::new(source.clone()));
        let sandbox = SandboxId::default_sandbox();
        ledger.firewall(&sandbox).await.expect("the list is read");
        let mut resolved = source.resolved(&sandbox);
        resolved.token = SharedToken::from("ASIATEMPORARYKEYID01");
        resolved.signing = Some(Arc::new(airlock_vault_client::SigningKeys::AwsSigV4(
            airlock_vault_client::AwsSigV4Keys {
                secret_variable: "AWS_SECRET_ACCESS_KEY".into(),
                placeholder_secret: SecretString::from("miosa-tok-SECRETPH"),
                secret_access_key: SecretString::from("temporary/secret+key0123"),
                session_token: Some(airlock_vault_client::SessionToken {
                    variable: "AWS_SESSION_TOKEN".into(),
                    placeholder: "miosa-tok-TOKENPH".into(),
                    token: SecretString::from("IQoJb3JpZ2luX2VjEtemporarytoken"),
                }),
            },
        )));
        ledger.record(&sandbox, "miosa-tok-KEYPH", &resolved);
        let fw = ledger.firewall(&sandbox).await.expect("a firewall");
        let out = fw.scrub(
            b"ASIATEMPORARYKEYID01 temporary/secret+key0123 IQoJb3JpZ2luX2VjEtemporarytoken",
        );
        assert_eq!(
            out.as_ref(),
            b"miosa-tok-KEYPH miosa-tok-SECRETPH miosa-tok-TOKENPH"
        );
    }

    #[tokio::test]
    async fn guards_listed_tokens_and_previous_ones_after_a_refresh() {
        let source = Arc::new(Rotating {
            current: Mutex::new("tok_OLD_0123456789abcdef".into()),
            listed: Default::default(),
            extra: 0,
            at_once: false,
        });
        let ledger = Arc::new(TokenLedger::new(source.clone()));
        let sandbox = SandboxId::default_sandbox();
        // Nothing was ever resolved: the source's list alone is guarded.
        let fw = ledger.firewall(&sandbox).await.expect("a firewall");
        assert_eq!(
            fw.scrub(b"echo tok_OLD_0123456789abcdef").as_ref(),
            b"echo miosa-tok-PH"
        );
        // A refresh hands out a new token: both are guarded now.
        *source.current.lock().unwrap() = "tok_NEW_0123456789abcdef".into();
        ledger
            .refresh(&sandbox, "miosa-tok-PH", &SecretString::from("x"))
            .await
            .unwrap();
        let fw = ledger.firewall(&sandbox).await.expect("a firewall");
        let out = fw.scrub(b"tok_OLD_0123456789abcdef tok_NEW_0123456789abcdef");
        assert_eq!(out.as_ref(), b"miosa-tok-PH miosa-tok-PH");
        // The list was read once: later calls use the cache.
        assert_eq!(source.listed.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another sandbox has its own (here: the source lists the same).
        assert!(ledger.firewall(&SandboxId::new("other")).await.is_some());
    }

    #[tokio::test]
    async fn a_reload_that_lists_the_same_tokens_keeps_the_firewall() {
        let (source, ledger, sandbox) = listed_ledger().await;
        let first = ledger.firewall(&sandbox).await.expect("a firewall");
        let version = || ledger.ledger(&sandbox).state.read().unwrap().version;
        let before = version();
        // The same list again: the firewall is not built anew.
        ledger.load(&sandbox, true).await;
        assert_eq!(version(), before);
        let again = ledger.firewall(&sandbox).await.expect("a firewall");
        assert!(Arc::ptr_eq(&first, &again));
        // A new token in the list: a new firewall that guards it too.
        *source.current.lock().unwrap() = "tok_NEW_0123456789abcdef".into();
        ledger.load(&sandbox, true).await;
        assert!(version() > before);
        guards_current_and_new(&ledger, &sandbox).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The lock held across awaits stands for a build under way.
    #[allow(clippy::await_holding_lock)]
    async fn a_firewall_being_built_holds_back_only_the_request_whose_token_it_adds() {
        let (source, ledger, sandbox) = listed_ledger().await;
        let first = ledger.firewall(&sandbox).await.expect("a firewall");
        let listed = source.resolved(&sandbox);
        *source.current.lock().unwrap() = "tok_NEW_0123456789abcdef".into();
        let refreshed = source.resolved(&sandbox);
        // A build under way (as one for 1 000 tokens takes ~0.4 s).
        let sandbox_ledger = ledger.ledger(&sandbox);
        let build = sandbox_ledger.building.lock().unwrap();
        let recording = std::thread::spawn({
            let (ledger, sandbox) = (ledger.clone(), sandbox.clone());
            move || ledger.record(&sandbox, "miosa-tok-PH", &refreshed)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while sandbox_ledger.state.read().unwrap().entries.len() < 2 {
            assert!(Instant::now() < deadline, "the new token was not recorded");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Requests with tokens the current firewall guards go on with it ...
        ledger.record(&sandbox, "miosa-tok-PH", &listed);
        let current = ledger.firewall(&sandbox).await.expect("a firewall");
        assert!(Arc::ptr_eq(&first, &current));
        // ... the one with the new token waits until a firewall guards it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!recording.is_finished(), "the new token left unguarded");
        drop(build);
        recording.join().unwrap();
        guards_current_and_new(&ledger, &sandbox).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_too_long_to_build_inline_is_built_on_a_blocking_thread_and_guarded() {
        let source = Arc::new(Rotating {
            current: Mutex::new("tok_CUR_0123456789abcdef".into()),
            listed: Default::default(),
            extra: BUILD_INLINE_UP_TO * 2,
            at_once: true,
        });
        let ledger = Arc::new(TokenLedger::new(source.clone()));
        let sandbox = SandboxId::default_sandbox();
        let fw = ledger.firewall(&sandbox).await.expect("a firewall");
        assert_eq!(fw.token_count(), BUILD_INLINE_UP_TO * 2 + 1);
        let last = BUILD_INLINE_UP_TO * 2 - 1;
        let echo = format!("tok_CUR_0123456789abcdef tok_other_{last:04}_0123456789abcdef");
        assert_eq!(
            fw.scrub(echo.as_bytes()).as_ref(),
            format!("miosa-tok-PH miosa-tok-OTHER{last}").as_bytes()
        );
        // A refresh's new token: built off the worker too, guarded on return.
        *source.current.lock().unwrap() = "tok_NEW_0123456789abcdef".into();
        ledger
            .refresh(&sandbox, "miosa-tok-PH", &SecretString::from("x"))
            .await
            .unwrap();
        guards_current_and_new(&ledger, &sandbox).await;
        // A new token answered at once (a cache's): not built on this
        // worker; the answer waits for the async path, which builds off it.
        *source.current.lock().unwrap() = "tok_NXT_0123456789abcdef".into();
        assert!(ledger.resolve_now(&sandbox, "miosa-tok-PH").is_none());
        let resolved = ledger.resolve(&sandbox, "miosa-tok-PH").await.unwrap();
        assert_eq!(resolved.token.expose_secret(), "tok_NXT_0123456789abcdef");
        let fw = ledger.firewall(&sandbox).await.expect("a firewall");
        assert_eq!(
            fw.scrub(b"tok_NXT_0123456789abcdef").as_ref(),
            b"miosa-tok-PH"
        );
        // Built: the next answer at once comes at once.
        let now = ledger
            .resolve_now(&sandbox, "miosa-tok-PH")
            .expect("at once");
        assert_eq!(
            now.unwrap().token.expose_secret(),
            "tok_NXT_0123456789abcdef"
        );
    }

    #[tokio::test]
    async fn a_placeholders_new_token_is_never_taken_for_its_known_one() {
        let (source, ledger, sandbox) = listed_ledger().await;
        let version = || ledger.ledger(&sandbox).state.read().unwrap().version;
        let listed = source.resolved(&sandbox);
        let before = version();
        // The listed token, used again and again: nothing rebuilt.
        for _ in 0..3 {
            ledger.record(&sandbox, "miosa-tok-PH", &listed);
        }
        assert_eq!(version(), before);
        // A new token for the same placeholder is not taken for the old one.
        *source.current.lock().unwrap() = "tok_NEW_0123456789abcdef".into();
        let refreshed = source.resolved(&sandbox);
        ledger.record(&sandbox, "miosa-tok-PH", &refreshed);
        let after = version();
        assert!(after > before, "the new token was recorded");
        ledger.record(&sandbox, "miosa-tok-PH", &refreshed);
        assert_eq!(version(), after);
        // The old one, seen again under its placeholder, is still guarded.
        ledger.record(&sandbox, "miosa-tok-PH", &listed);
        let fw = ledger.firewall(&sandbox).await.expect("a firewall");
        let out = fw.scrub(b"tok_CUR_0123456789abcdef tok_NEW_0123456789abcdef");
        assert_eq!(out.as_ref(), b"miosa-tok-PH miosa-tok-PH");
    }

    #[tokio::test]
    async fn a_narrowed_placeholder_resolves_through_its_root_and_made_up_ones_cost_no_reload() {
        let (source, ledger, sandbox) = listed_ledger().await;
        let once =
            airlock_vault_client::narrow("miosa-tok-", "miosa-tok-PH", &["uses=1".into()]).unwrap();
        let r = ledger.resolve(&sandbox, &once).await.unwrap();
        assert_eq!(r.token.expose_secret(), "tok_CUR_0123456789abcdef");
        assert_eq!(r.binding.id, "provider:acme");
        assert_eq!(r.binding.narrowed.as_ref().unwrap().placeholder, once);
        let spent = ledger.resolve(&sandbox, &once).await.unwrap_err();
        assert!(spent.to_string().contains("1 uses are spent"), "{spent}");
        // A narrowing of a placeholder this sandbox does not have.
        let made_up = airlock_vault_client::narrow(
            "miosa-tok-",
            "miosa-tok-NotOurs0123456789abcdefghij",
            &["uses=5".into()],
        )
        .unwrap();
        for _ in 0..20 {
            assert!(matches!(
                ledger.resolve(&sandbox, &made_up).await,
                Err(TokenError::UnknownPlaceholder)
            ));
        }
        assert_eq!(
            source.listed.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the list is fresh: no vault call per made-up narrowing"
        );
    }

    #[tokio::test]
    async fn a_narrowed_requests_firewall_is_built_once_per_set_until_the_tokens_change() {
        let (source, ledger, sandbox) = listed_ledger().await;
        let narrowed =
            airlock_vault_client::narrow("miosa-tok-", "miosa-tok-PH", &["allow=GET /**".into()])
                .unwrap();
        let r = ledger.resolve(&sandbox, &narrowed).await.unwrap();
        let set = [(narrowed.clone(), r.token.to_secret_string())];
        let first = ledger.firewall_for_narrowed(&sandbox, &set).unwrap();
        let again = ledger.firewall_for_narrowed(&sandbox, &set).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same set reuses its firewall"
        );
        // A new token for the sandbox: the cached firewall would not guard it.
        *source.current.lock().unwrap() = "tok_NEW_0123456789abcdef".into();
        let fresh = ledger.resolve(&sandbox, "miosa-tok-PH").await.unwrap();
        ledger.record(&sandbox, "miosa-tok-PH", &fresh);
        let rebuilt = ledger.firewall_for_narrowed(&sandbox, &set).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &rebuilt),
            "rebuilt after the tokens changed"
        );
    }

    #[tokio::test]
    async fn a_narrowed_placeholder_is_answered_at_once_and_still_counts_its_uses() {
        let source = Arc::new(Rotating {
            current: Mutex::new("tok_CUR_0123456789abcdef".into()),
            listed: Default::default(),
            extra: 0,
            at_once: false,
        });
        let cached = Arc::new(airlock_vault_client::CachedTokenSource::new(source));
        let ledger = Arc::new(TokenLedger::new(cached));
        let sandbox = SandboxId::default_sandbox();
        ledger.firewall(&sandbox).await.expect("the list is read");
        let twice =
            airlock_vault_client::narrow("miosa-tok-", "miosa-tok-PH", &["uses=2".into()]).unwrap();
        assert!(
            ledger.resolve_now(&sandbox, &twice).is_none(),
            "not verified yet: the slow path verifies it"
        );
        ledger.resolve(&sandbox, &twice).await.unwrap();
        let now = ledger.resolve_now(&sandbox, &twice).expect("at once");
        let r = now.unwrap();
        assert_eq!(r.token.expose_secret(), "tok_CUR_0123456789abcdef");
        assert_eq!(r.binding.narrowed.as_ref().unwrap().placeholder, twice);
        let spent = ledger.resolve_now(&sandbox, &twice).expect("at once");
        assert!(
            spent.unwrap_err().to_string().contains("2 uses are spent"),
            "the shortcut counts uses like the slow path"
        );
    }

    #[tokio::test]
    async fn a_narrowing_verified_once_still_expires() {
        let (_, ledger, sandbox) = listed_ledger().await;
        let soon = format!("expires={}", unix_now() + 1);
        let narrowed = airlock_vault_client::narrow("miosa-tok-", "miosa-tok-PH", &[soon]).unwrap();
        assert!(ledger.resolve(&sandbox, &narrowed).await.is_ok());
        assert!(
            ledger.resolve(&sandbox, &narrowed).await.is_ok(),
            "verified, kept"
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let expired = ledger.resolve(&sandbox, &narrowed).await.unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
    }
}
