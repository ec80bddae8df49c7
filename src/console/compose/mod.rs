//! The composer's form and a campaign definition, both ways: `form` reads the
//! form (and writes a definition back into one), `slots` places validation
//! errors beside the form's fields, `preview` is what the phone shows. Only
//! the form's own parsing lives here (text to a number, a duration, JSON, rows
//! to lists); every rule about what a campaign may be is
//! [`crate::domain::campaign::CampaignDefinition::validate`]'s, so the console
//! shows exactly the errors a file or the API would get. Pure: no I/O.

mod form;
mod preview;
mod slots;

pub use form::{ButtonRow, ComposeForm, FilterRow, Layout, LocaleRow, FILTER_ROWS, LOCALE_ROWS};
pub use preview::Preview;
pub use slots::FieldErrors;

/// Form pairs as a browser posts them (tests).
#[cfg(test)]
pub(crate) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// App `shop` with topics `news` and `offers` (tests).
#[cfg(test)]
pub(crate) fn app() -> crate::domain::campaign::AppContext<'static> {
    crate::domain::campaign::AppContext {
        app_id: "shop",
        topics: ["news", "offers"].into_iter().collect(),
    }
}
