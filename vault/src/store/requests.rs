//! Finished requests that remote proxies report (`POST /v1/service/requests`),
//! kept a day, for the console's recent requests across the fleet.

use airlock_vault_client::contract::RequestRecord;
use sqlx::Row;

use super::{new_id, now, Store};
use crate::error::VaultError;

/// Reports older than this are deleted when new ones arrive.
const KEEP_SECS: i64 = 24 * 3600;

impl Store {
    pub async fn insert_requests(
        &self,
        proxy: &str,
        records: &[RequestRecord],
    ) -> Result<(), VaultError> {
        let mut tx = self.pool.begin().await?;
        for record in records {
            let json = serde_json::to_string(record).expect("a record serialises");
            sqlx::query(
                "INSERT INTO proxy_requests (id, at, proxy, record) VALUES ($1, $2, $3, $4)",
            )
            .bind(new_id("req"))
            .bind(record.at as i64)
            .bind(proxy)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM proxy_requests WHERE at < $1")
            .bind(now() - KEEP_SECS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` reports, newest first, with the proxy that sent each.
    pub async fn recent_requests(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, RequestRecord)>, VaultError> {
        let rows = sqlx::query(
            "SELECT proxy, record FROM proxy_requests ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let proxy: String = row.try_get("proxy")?;
            let record: String = row.try_get("record")?;
            if let Ok(record) = serde_json::from_str(&record) {
                out.push((proxy, record));
            }
        }
        Ok(out)
    }
}
