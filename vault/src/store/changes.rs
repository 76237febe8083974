//! Change notices between vault replicas on one PostgreSQL database:
//! `NOTIFY` on one channel when a replica changed what proxies may have
//! cached (a disconnect, a revocation, a refresh, a deleted sandbox), and a
//! `LISTEN`ing connection per replica. SQLite has one replica: nothing to do.

use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;

use super::{Backend, Store};
use crate::error::VaultError;

/// The channel every replica listens on.
pub const CHANGES_CHANNEL: &str = "airlock_changes";

/// What one replica hears from the others.
pub enum Heard {
    /// A replica (the payload names it) changed something.
    Change(String),
    /// The listening connection was lost and made again: notices may have
    /// been missed meanwhile.
    Reconnected,
}

/// A replica's `LISTEN` on [`CHANGES_CHANNEL`].
pub struct ChangeListener(PgListener);

impl ChangeListener {
    /// The next notice; reconnects by itself after a lost connection.
    pub async fn next(&mut self) -> Result<Heard, VaultError> {
        match self.0.try_recv().await {
            Ok(Some(notice)) => Ok(Heard::Change(notice.payload().to_owned())),
            Ok(None) => Ok(Heard::Reconnected),
            Err(e) => Err(VaultError::Store(format!("listening for changes: {e}"))),
        }
    }
}

impl Store {
    /// Tells the other replicas that `instance` changed something.
    pub async fn notify_changed(&self, instance: &str) -> Result<(), VaultError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        // NOTIFY takes no bind parameters; the instance id is airlock's own.
        if !instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(VaultError::Invalid(format!(
                "instance id {instance:?} is not a plain name"
            )));
        }
        sqlx::query(&format!("NOTIFY {CHANGES_CHANNEL}, '{instance}'"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A listener on the change channel, or `None` on SQLite.
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>, VaultError> {
        let Some(url) = &self.postgres_url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url.expose_secret())
            .await
            .map_err(|e| VaultError::Store(format!("cannot listen for changes: {e}")))?;
        listener
            .listen(CHANGES_CHANNEL)
            .await
            .map_err(|e| VaultError::Store(format!("cannot listen for changes: {e}")))?;
        Ok(Some(ChangeListener(listener)))
    }
}
