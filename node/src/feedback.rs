//! Recording a household's feedback (`fb` document, [`cunyun_protocol::feedback`]) on this node:
//! an item opened on the villager page or in the cadre app, an item rated 「有帮助」, an item's
//! file first available on the village node (`Event::Delivered`, recorded by the push-down loop,
//! `crate::pushdown`, when a recommended file completes; an open also counts as delivered). Only items of the household's `rec` document are accepted; each
//! acknowledged record is committed to the store before the call returns. The document holds no
//! personal data (content ids, days, counts).

use automerge::Automerge;
use cunyun_protocol::feedback::{Feedback, Recorded};
use cunyun_protocol::fields::Date;
use cunyun_protocol::key::{DocKey, Kind};
use cunyun_protocol::rec::Rec;

use crate::records::{RecordError, Records};
use cunyun_platform::clock::now_ms;
use cunyun_platform::store::DocWrite;

/// Commit author of feedback changes (the villager is anonymous; the node records it).
const AUTHOR: &str = "feedback";

/// One feedback event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The item was opened (villager page or cadre app).
    View,
    /// The villager rated the item helpful.
    Helpful,
    /// The item's file became available on the node.
    Delivered,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::View => "view",
            Event::Helpful => "helpful",
            Event::Delivered => "delivered",
        }
    }
}

impl Records {
    /// Records `event` for `item` of household `id` on `day`. Returns whether the document
    /// changed (a second 「有帮助」 on one day, or a view beyond the day's cap, changes nothing).
    /// Refuses an unknown household and an item not in its `rec` document.
    pub async fn record_feedback(
        &self,
        id: &str,
        item: &str,
        event: Event,
        day: Date,
    ) -> Result<Recorded, RecordError> {
        let hh = self
            .find_household(id)?
            .ok_or_else(|| RecordError::NotFound(id.to_string()))?;
        let rec_key = hh.with_kind(Kind::Rec);
        let in_rec = match self.store().load(&rec_key)? {
            Some(doc) => Rec::read_from(&doc)?.items.contains_key(item),
            None => false,
        };
        if !in_rec {
            return Err(RecordError::NotFound(format!("{id}/{item}")));
        }
        let key: DocKey = hh.with_kind(Kind::Fb);
        let _guard = self.lock_for(&format!("fb/{id}")).lock().await;
        let mut doc = self.store().load(&key)?.unwrap_or_else(Automerge::new);
        let mut fb = if doc.get_heads().is_empty() {
            Feedback::new(*hh.area())
        } else {
            Feedback::read_from(&doc)?
        };
        let recorded = match event {
            Event::View => {
                // An item is opened only once its file is shown: it was delivered by then.
                let delivered = fb.record_delivered(item, day);
                match fb.record_view(item, day) {
                    Recorded::Unchanged => delivered,
                    changed => changed,
                }
            }
            Event::Helpful => fb.record_helpful(item, day),
            Event::Delivered => fb.record_delivered(item, day),
        };
        if recorded == Recorded::Unchanged {
            return Ok(recorded);
        }
        let before = doc.get_heads();
        doc.set_author(Some(Self::author(AUTHOR)));
        let mut tx = doc.transaction();
        fb.write_to(&mut tx)?;
        tx.commit_with(Self::commit_options(AUTHOR, "feedback"));
        self.store()
            .commit_async(vec![DocWrite {
                key: key.clone(),
                chunk: doc.save_after(&before),
                heads: doc.get_heads(),
                updated_at_ms: now_ms(),
            }])
            .await?;
        tracing::info!(target: "cunyun::_events::feedback", key = %key, item, event = event.name());
        Ok(Recorded::Changed)
    }
}
