//! Sandboxes and their bindings (placeholder → provider or secret).

use super::Store;
use crate::error::VaultError;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SandboxRow {
    pub id: String,
    pub tenant: String,
    pub workspace: Option<String>,
    pub user_name: Option<String>,
    pub secret_hash: String,
    pub created_at: i64,
    /// Default wait for consent, seconds; `None`: the proxy's.
    pub consent_wait_secs: Option<i64>,
    /// Whose connections it resolves: those of this environment only.
    pub environment: String,
}

/// What a binding stands for; its `target` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingTarget {
    /// A provider: the sandbox's visible connection to it.
    Provider,
    /// A static secret of the vault.
    Secret,
}

super::text_enum!(BindingTarget, "binding target", {
    Provider => "provider",
    Secret => "secret",
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BindingRow {
    pub placeholder: String,
    pub sandbox_id: String,
    pub env_name: String,
    pub target_kind: BindingTarget,
    pub target: String,
    /// JSON of the binding's own `RulesSpec`; `None`: its provider's.
    pub rules: Option<String>,
    /// A provider binding pinned to the connection of that name; `None`:
    /// the most specific connection the sandbox sees.
    pub connection_name: Option<String>,
}

impl BindingRow {
    /// How audit lines and errors name it: `provider:github`,
    /// `provider:github/work` when pinned, `secret:NAME`.
    pub fn id(&self) -> String {
        match &self.connection_name {
            Some(name) => format!("{}:{}/{name}", self.target_kind, self.target),
            None => format!("{}:{}", self.target_kind, self.target),
        }
    }
}

impl Store {
    // ---- sandboxes and bindings -------------------------------------------

    pub async fn insert_sandbox(
        &self,
        s: &SandboxRow,
        bindings: &[BindingRow],
    ) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sandboxes (id, tenant, workspace, user_name, secret_hash, created_at, consent_wait_secs, environment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.workspace)
        .bind(&s.user_name)
        .bind(&s.secret_hash)
        .bind(s.created_at)
        .bind(s.consent_wait_secs)
        .bind(&s.environment)
        .execute(&mut *tx)
        .await?;
        insert_bindings(&mut tx, bindings, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the sandbox row unless it exists (replicas may race at start).
    pub async fn ensure_sandbox_row(&self, s: &SandboxRow) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO sandboxes (id, tenant, workspace, user_name, secret_hash, created_at, consent_wait_secs, environment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.workspace)
        .bind(&s.user_name)
        .bind(&s.secret_hash)
        .bind(s.created_at)
        .bind(s.consent_wait_secs)
        .bind(&s.environment)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a sandbox to another environment (the sidecar follows its config).
    pub async fn set_sandbox_environment(
        &self,
        id: &str,
        environment: &str,
    ) -> Result<(), VaultError> {
        sqlx::query("UPDATE sandboxes SET environment = $1 WHERE id = $2")
            .bind(environment)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds bindings; one that would reuse a variable name of the sandbox is skipped.
    pub async fn add_bindings(&self, bindings: &[BindingRow]) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await?;
        insert_bindings(&mut tx, bindings, true).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn sandbox(&self, id: &str) -> Result<Option<SandboxRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, SandboxRow>("SELECT * FROM sandboxes WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn sandboxes(&self) -> Result<Vec<SandboxRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, SandboxRow>("SELECT * FROM sandboxes ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn delete_sandbox(&self, id: &str) -> Result<bool, VaultError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM bindings WHERE sandbox_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM sandboxes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn binding(&self, placeholder: &str) -> Result<Option<BindingRow>, VaultError> {
        Ok(
            sqlx::query_as::<_, BindingRow>("SELECT * FROM bindings WHERE placeholder = $1")
                .bind(placeholder)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets (or with `None` clears) the rules of the sandbox's binding for
    /// `env_name`; false when there is no such binding.
    pub async fn set_binding_rules(
        &self,
        sandbox_id: &str,
        env_name: &str,
        rules: Option<&str>,
    ) -> Result<bool, VaultError> {
        let done =
            sqlx::query("UPDATE bindings SET rules = $1 WHERE sandbox_id = $2 AND env_name = $3")
                .bind(rules)
                .bind(sandbox_id)
                .bind(env_name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn bindings_of(&self, sandbox_id: &str) -> Result<Vec<BindingRow>, VaultError> {
        Ok(sqlx::query_as::<_, BindingRow>(
            "SELECT * FROM bindings WHERE sandbox_id = $1 ORDER BY env_name",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The sandbox's bindings of one kind.
    pub async fn bindings_of_kind(
        &self,
        sandbox_id: &str,
        kind: BindingTarget,
    ) -> Result<Vec<BindingRow>, VaultError> {
        Ok(sqlx::query_as::<_, BindingRow>(
            "SELECT * FROM bindings WHERE sandbox_id = $1 AND target_kind = $2 ORDER BY env_name",
        )
        .bind(sandbox_id)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Inserts bindings; with `skip_taken`, one reusing a sandbox's variable name is skipped.
async fn insert_bindings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    bindings: &[BindingRow],
    skip_taken: bool,
) -> Result<(), VaultError> {
    let sql = if skip_taken {
        "INSERT INTO bindings (placeholder, sandbox_id, env_name, target_kind, target, rules, connection_name) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (sandbox_id, env_name) DO NOTHING"
    } else {
        "INSERT INTO bindings (placeholder, sandbox_id, env_name, target_kind, target, rules, connection_name) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    };
    for b in bindings {
        sqlx::query(sql)
            .bind(&b.placeholder)
            .bind(&b.sandbox_id)
            .bind(&b.env_name)
            .bind(b.target_kind.as_str())
            .bind(&b.target)
            .bind(&b.rules)
            .bind(&b.connection_name)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
