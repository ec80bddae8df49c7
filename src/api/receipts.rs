//! Each app's receipt key as the API checks receipt tokens with it.

use std::collections::HashMap;

use tokio::sync::RwLock;

use crate::domain::receipt::ReceiptKey;
use crate::store::{Store, StoreError};

/// The apps' receipt keys, read from the store once and again when an app is
/// missing (an app synced after the first read).
#[derive(Debug, Default)]
pub struct ReceiptKeys(RwLock<HashMap<String, ReceiptKey>>);

impl ReceiptKeys {
    pub async fn get<S: Store>(
        &self,
        store: &S,
        app: &str,
    ) -> Result<Option<ReceiptKey>, StoreError> {
        if let Some(k) = self.0.read().await.get(app) {
            return Ok(Some(k.clone()));
        }
        let mut keys = self.0.write().await;
        *keys = read_all(store).await?;
        Ok(keys.get(app).cloned())
    }
}

/// Every app's receipt key from the store (an unreadable one is an invariant
/// broken: the store writes only 64 hex digits).
pub async fn read_all<S: Store>(store: &S) -> Result<HashMap<String, ReceiptKey>, StoreError> {
    crate::domain::receipt::keys_by_app(store.app_receipt_key_list().await?)
        .map_err(StoreError::Invariant)
}
