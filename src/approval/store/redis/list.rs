//! Listing approvals on the approval store's Redis: one page of the listing index
//! (`cs:idx`) or the pending one (`cs:pending`), newest first, read in one pipelined round
//! trip. Owns the paging only; must not write anything.

use redis::AsyncCommands;

use super::keys::{APPROVAL, INDEX, PENDING};
use super::RedisStore;
use crate::approval::record::{Approval, ApprovalId};
use crate::approval::store::{Cursor, ListFilter, Page, StoreError};

impl RedisStore {
    /// [`crate::approval::ApprovalStore::list_page`] on Redis: newest first by `created_at`, ties by id.
    pub(super) async fn list_page_here(
        &self,
        filter: ListFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        if limit == 0 {
            return Ok(Page::default());
        }
        let index = match filter {
            ListFilter::Pending => PENDING,
            ListFilter::All | ListFilter::AwaitingExecution => INDEX,
        };
        let mut c = self.conn().await?;
        // Entries with the cursor's own score come first in a reverse range: fetch enough to
        // skip those at or above the cursor's id (ties are ordered by id, highest first).
        let (max, skip_ties) = match after {
            None => ("+inf".to_owned(), 0),
            Some(cur) => {
                let at = cur.created_at;
                let ties: usize = self
                    .call("list", async { c.zcount(index, at, at).await })
                    .await?;
                (at.to_string(), ties)
            }
        };
        let fetch = limit.saturating_add(skip_ties);
        let raw: Vec<(String, f64)> = self
            .call("list", async {
                c.zrevrangebyscore_limit_withscores(index, &max, "-inf", 0, fetch as isize)
                    .await
            })
            .await?;
        let exhausted = raw.len() < fetch;
        let keys: Vec<(u64, String)> = raw
            .into_iter()
            .map(|(id, score)| (score as u64, id))
            .filter(|(at, id)| match after {
                Some(cur) => *at < cur.created_at || id.as_str() < cur.id.as_str(),
                None => true,
            })
            .take(limit)
            .collect();
        let mut page = Page::default();
        if !exhausted || keys.len() == limit {
            page.next = keys.last().and_then(|(at, id)| {
                ApprovalId::parse(id).map(|id| Cursor {
                    created_at: *at,
                    id,
                })
            });
        }
        if keys.is_empty() {
            page.next = None;
            return Ok(page);
        }
        let mut pipe = redis::pipe();
        for (_, id) in &keys {
            pipe.cmd("HGET").arg(format!("cs:apr:{id}")).arg("json");
        }
        let jsons: Vec<Option<String>> = self
            .call("list", async { pipe.query_async(&mut c).await })
            .await?;
        for ((_, id), json) in keys.iter().zip(jsons) {
            let (Some(id), Some(json)) = (ApprovalId::parse(id), json) else {
                continue;
            };
            // One tampered record must not hide every other approval: it is skipped here and
            // refused (and audited) wherever it is read by id.
            let a = match self.open::<Approval>(APPROVAL, &id, &json) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "approval store: listing skips a record");
                    continue;
                }
            };
            if filter.matches(&a) {
                page.items.push(a);
            }
        }
        Ok(page)
    }
}
