//! `[model]` onto the registry: the registered configuration of `model.name`, with `in_chans`,
//! `drop_path_rate`, `drop_rate`, the free `[model.arch]` table, `img_size` and `num_classes`
//! applied on top.
//!
//! The trainer never names a concrete family: architecture fields are checked against the field
//! names of the family's serialised configuration (`ModelConfig::to_json`), so `[model.arch]`
//! accepts exactly what the family's config struct has.

use kiln_models::{ModelConfig, ModelEntry};
use serde_json::{Map, Value as Json};

use super::error::closest;
use super::schema::ModelSection;
use super::checker::Checker;

/// `[model]` keys with a dedicated place in the section; `[model.arch]` may not set them.
const DEDICATED_FIELDS: [&str; 5] = ["num_classes", "in_chans", "img_size", "drop_path_rate", "drop_rate"];

/// The registered model with the experiment's changes applied.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The registry entry of `model.name` (its evaluation defaults included).
    pub entry: ModelEntry,
    /// The architecture to build.
    pub config: ModelConfig,
}

impl ResolvedModel {
    /// The family's configuration fields as JSON (`{"embed_dim": 96, ...}`).
    pub fn fields(&self) -> Map<String, Json> {
        config_fields(&self.config)
    }
}

/// Looks `model.name` up and applies the section's changes, reporting every bad key to
/// `checker`. `None` when the name is unknown or a change does not fit the family.
pub fn resolve_model(section: &ModelSection, checker: &mut Checker<'_>) -> Option<ResolvedModel> {
    let entry = match kiln_models::find(&section.name) {
        Ok(entry) => entry,
        Err(err) => {
            checker.fail("model.name", err.to_string());
            return None;
        }
    };
    let registered = (entry.config)();
    let family = registered.family();
    let mut fields = config_fields(&registered);
    let field_names: Vec<String> = fields.keys().cloned().collect();
    let mut fits = true;

    let dedicated = [
        ("in_chans", section.in_chans.map(Json::from)),
        ("drop_path_rate", section.drop_path_rate.map(Json::from)),
        ("drop_rate", section.drop_rate.map(Json::from)),
    ];
    for (field, value) in dedicated {
        let Some(value) = value else { continue };
        let key = format!("model.{field}");
        if !fields.contains_key(field) {
            checker.fail(&key, format!("the {family} family has no `{field}`; remove this key"));
            fits = false;
        } else {
            fits &= set_field(&mut fields, field, value, family, &key, checker);
        }
    }

    for (field, value) in &section.arch {
        let key = format!("model.arch.{field}");
        if DEDICATED_FIELDS.contains(&field.as_str()) {
            checker.fail(&key, format!("set `model.{field}` instead of `model.arch.{field}`"));
            fits = false;
            continue;
        }
        if !fields.contains_key(field) {
            let hint = closest(field, field_names.iter().map(String::as_str))
                .map_or(String::new(), |name| format!("did you mean `{name}`? "));
            let settable: Vec<&str> =
                field_names.iter().map(String::as_str).filter(|f| !DEDICATED_FIELDS.contains(f)).collect();
            checker.fail(
                &key,
                format!("{family} models have no architecture field `{field}`; {hint}fields: {}", settable.join(", ")),
            );
            fits = false;
            continue;
        }
        let value = serde_json::to_value(value).expect("a TOML value converts to JSON");
        fits &= set_field(&mut fields, field, value, family, &key, checker);
    }

    if !fits {
        return None;
    }
    let mut config = from_fields(family, fields).expect("every field was checked on its own");
    if let Some(size) = section.img_size {
        config.set_img_size(size.to_array());
    }
    if let Some(classes) = section.num_classes {
        config.set_num_classes(classes);
    }
    Some(ResolvedModel { entry, config })
}

/// Sets one field if its value has the right shape and the family's config still parses.
fn set_field(fields: &mut Map<String, Json>, field: &str, value: Json, family: &str, key: &str, checker: &mut Checker<'_>) -> bool {
    let current = fields[field].clone();
    if !same_shape(&current, &value) {
        checker.fail(key, format!("expected {} (the registered value is {current}), found {value}", describe(&current)));
        return false;
    }
    fields.insert(field.to_string(), value.clone());
    if let Err(err) = from_fields(family, fields.clone()) {
        let detail = err.to_string();
        let detail = detail.rsplit_once("checkpoint: ").map_or(detail.as_str(), |(_, d)| d);
        checker.fail(key, format!("{value} does not fit {family}'s `{field}`: {detail}"));
        fields.insert(field.to_string(), current);
        return false;
    }
    true
}

fn config_fields(config: &ModelConfig) -> Map<String, Json> {
    let json: Json = serde_json::from_str(&config.to_json()).expect("ModelConfig::to_json writes JSON");
    match json.get("config") {
        Some(Json::Object(fields)) => fields.clone(),
        _ => Map::new(),
    }
}

fn from_fields(family: &str, fields: Map<String, Json>) -> Result<ModelConfig, kiln_models::ModelError> {
    ModelConfig::from_json(&serde_json::json!({ "family": family, "config": fields }).to_string())
}

/// Whether `value` can stand where `registered` stands (an integer may stand for a float).
fn same_shape(registered: &Json, value: &Json) -> bool {
    match (registered, value) {
        (Json::Number(r), Json::Number(v)) => !(r.is_i64() || r.is_u64()) || v.is_i64() || v.is_u64(),
        (Json::Array(r), Json::Array(v)) => match r.first() {
            Some(first) => v.iter().all(|item| same_shape(first, item)),
            None => true,
        },
        (Json::Bool(_), Json::Bool(_)) | (Json::String(_), Json::String(_)) => true,
        (Json::Null, _) => true,
        _ => false,
    }
}

fn describe(value: &Json) -> String {
    match value {
        Json::Array(items) => match items.first() {
            Some(first) => format!("a list of {}", plural(first)),
            None => "a list".to_string(),
        },
        Json::Object(_) => "a table".to_string(),
        scalar => format!("a {}", singular(scalar)),
    }
}

fn singular(value: &Json) -> &'static str {
    match value {
        Json::Number(n) if n.is_i64() || n.is_u64() => "whole number",
        Json::Number(_) => "number",
        Json::Bool(_) => "boolean",
        Json::String(_) => "string",
        _ => "value",
    }
}

fn plural(value: &Json) -> String {
    format!("{}s", singular(value))
}
