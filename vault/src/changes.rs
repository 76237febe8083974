//! What proxies may have cached changed: a disconnect, a revocation, a
//! refresh, a deleted sandbox. Each change bumps the vault's generation;
//! subscribers (the service API's change stream, which remote proxies
//! follow) see it at once, and on PostgreSQL the other replicas hear of it
//! through `NOTIFY` and bump theirs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::store::{ChangeListener, Heard};
use crate::Vault;

/// How long the replica's tasks wait before trying again after an error.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often an idle task checks whether its vault is gone.
const CHECK_ALIVE: Duration = Duration::from_secs(30);

/// The generation as subscribers see it, and whether this replica has
/// changes the others have not heard of.
pub(crate) struct Changes {
    generation: watch::Sender<u64>,
    unpublished: Arc<Notify>,
}

impl Changes {
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            generation: watch::channel(generation).0,
            unpublished: Arc::new(Notify::new()),
        }
    }
}

impl Vault {
    /// This replica changed something: proxies and the other replicas must hear.
    pub(crate) fn bump_generation(&self) {
        self.bump_seen();
        // A stored permit: one notice covers every change made before it goes.
        self.changes.unpublished.notify_one();
    }

    /// Something changed (here or in another replica).
    fn bump_seen(&self) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.changes.generation.send_replace(generation);
    }

    /// Another replica changed something, or may have: the providers it
    /// added or deleted are read again, then proxies hear of it.
    async fn heard_of_a_change(&self) {
        if let Err(error) = self.reload_providers().await {
            tracing::warn!(%error, "could not read the providers again after another replica's change");
        }
        self.bump_seen();
    }

    /// Follows the generation: the receiver wakes on every change, from
    /// this replica or (PostgreSQL) another.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.generation.subscribe()
    }

    /// On PostgreSQL: tells the other replicas of this one's changes and
    /// listens for theirs, until the vault is dropped. Nothing on SQLite.
    pub fn spawn_change_sync(self: &Arc<Self>) {
        if self.store.backend() != crate::store::Backend::Postgres {
            return;
        }
        tokio::spawn(publish(
            Arc::downgrade(self),
            self.changes.unpublished.clone(),
        ));
        tokio::spawn(listen(Arc::downgrade(self)));
    }
}

/// One `NOTIFY` per batch of this replica's changes.
async fn publish(vault: Weak<Vault>, unpublished: Arc<Notify>) {
    loop {
        if tokio::time::timeout(CHECK_ALIVE, unpublished.notified())
            .await
            .is_err()
        {
            if vault.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(me) = vault.upgrade() else { return };
        if let Err(error) = me.store.notify_changed(&me.instance).await {
            tracing::warn!(%error, "could not tell the other replicas of a change; trying again");
            unpublished.notify_one();
            drop(me);
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Hears the other replicas' changes. Notices missed while the listening
/// connection was down count as a change.
async fn listen(vault: Weak<Vault>) {
    let mut listener: Option<ChangeListener> = None;
    loop {
        let Some(me) = vault.upgrade() else { return };
        let Some(current) = listener.as_mut() else {
            match me.store.change_listener().await {
                Ok(Some(made)) => {
                    listener = Some(made);
                    // Whatever happened before it listened is not known.
                    me.heard_of_a_change().await;
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "not hearing the other replicas' changes yet; trying again");
                    drop(me);
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
            continue;
        };
        drop(me);
        let heard = match tokio::time::timeout(CHECK_ALIVE, current.next()).await {
            Err(_) => continue,
            Ok(heard) => heard,
        };
        let Some(me) = vault.upgrade() else { return };
        match heard {
            Ok(Heard::Change(from)) if from == me.instance => {}
            Ok(Heard::Change(_) | Heard::Reconnected) => me.heard_of_a_change().await,
            Err(error) => {
                tracing::warn!(%error, "lost the other replicas' changes; listening again");
                listener = None;
                me.bump_seen();
                drop(me);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
