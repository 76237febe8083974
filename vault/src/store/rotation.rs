//! Key rotation: every sealed value, and its replacement.

use sqlx::Row;

use super::Store;
use crate::crypto::Sealed;
use crate::error::VaultError;

/// Tables and columns that hold sealed values, for key rotation.
const SEALED_COLUMNS: &[(&str, &str, &[&str])] = &[
    ("apps", "id", &["client_secret"]),
    (
        "connections",
        "id",
        &[
            "access_token",
            "refresh_token",
            "client_secret",
            "pending_grant",
            "previous_access_token",
            "token_secret",
        ],
    ),
    ("oauth_states", "state_hash", &["pkce_verifier"]),
    ("connect_links", "id_hash", &["link_id"]),
    (
        "secrets",
        "id",
        &["value", "secret_access_key", "session_token"],
    ),
];

#[derive(Debug)]
pub struct SealedCell {
    pub table: &'static str,
    pub key_column: &'static str,
    pub key: String,
    pub column: &'static str,
    pub value: String,
}

impl SealedCell {
    /// The associated-data kind the value was sealed under.
    pub fn kind(&self) -> String {
        // A replaced access token keeps the seal it had as the current one.
        let column = match self.column {
            "previous_access_token" => "access_token",
            c => c,
        };
        format!("{}.{}", self.table, column)
    }
}

impl Store {
    // ---- key rotation ------------------------------------------------------

    /// Every sealed value: (table, key column, key, sealed column, sealed text).
    pub async fn sealed_values(&self) -> Result<Vec<SealedCell>, VaultError> {
        let mut out = Vec::new();
        for (table, key, columns) in SEALED_COLUMNS {
            for column in *columns {
                let rows = sqlx::query(&format!(
                    "SELECT {key} AS k, {column} AS v FROM {table} WHERE {column} IS NOT NULL"
                ))
                .fetch_all(&self.pool)
                .await?;
                for row in rows {
                    out.push(SealedCell {
                        table,
                        key_column: key,
                        key: row.try_get("k")?,
                        column,
                        value: row.try_get("v")?,
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn replace_sealed(
        &self,
        cell: &SealedCell,
        value: &Sealed,
    ) -> Result<(), VaultError> {
        sqlx::query(&format!(
            "UPDATE {} SET {} = $1 WHERE {} = $2 AND {} = $3",
            cell.table, cell.column, cell.key_column, cell.column
        ))
        .bind(value.encode())
        .bind(&cell.key)
        .bind(&cell.value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_access_token_is_rewrapped_under_the_seal_it_had() {
        let cell = |column| SealedCell {
            table: "connections",
            key_column: "id",
            key: "conn_1".into(),
            column,
            value: String::new(),
        };
        assert_eq!(
            cell("previous_access_token").kind(),
            "connections.access_token"
        );
        assert_eq!(cell("refresh_token").kind(), "connections.refresh_token");
    }
}
