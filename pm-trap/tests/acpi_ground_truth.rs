//! The ACPI reader against ACPICA-derived ground truth for the 60 real machines of
//! `shared/testdata/acpi` (see its README.md). Reimplements `check.py`'s `expected()` and
//! compares every field of every machine; fails with the list of mismatches.

use std::path::PathBuf;

use serde_json::{json, Value};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/acpi")
}

/// check.py `gas()`: null unless the address is non-zero; only space/addr/bit_width.
fn gas(g: &Value) -> Value {
    match g.get("addr").and_then(Value::as_u64) {
        Some(a) if a != 0 => {
            json!({"space": g["space"], "addr": g["addr"], "bit_width": g["bit_width"]})
        }
        _ => Value::Null,
    }
}

/// check.py `expected()`.
fn expected(t: &Value) -> Value {
    let f = &t["fadt"];
    let mut reset = Value::Null;
    if f["reset_reg_sup"].as_bool() == Some(true)
        && f["reset_reg"].is_object()
        && f["reset_reg"]["addr"].as_u64().is_some_and(|a| a != 0)
    {
        let mut r = gas(&f["reset_reg"]);
        r["value"] = f["reset_value"].clone();
        reset = r;
    }
    json!({
        "pm1a_cnt": gas(&f["pm1a_cnt"]),
        "pm1b_cnt": gas(&f["pm1b_cnt"]),
        "hw_reduced": f["hw_reduced"],
        "sleep_control": gas(&f["sleep_control_reg"]),
        "reset": reset,
        "S3": t["sleep"]["S3"], "S4": t["sleep"]["S4"], "S5": t["sleep"]["S5"],
    })
}

/// check.py `got()`: the same keys from our JSON.
fn got(d: &Value) -> Value {
    let g = |k: &str| {
        if d[k].is_null() {
            return Value::Null;
        }
        let mut m = serde_json::Map::new();
        for kk in ["space", "addr", "bit_width", "value"] {
            if let Some(v) = d[k].get(kk) {
                m.insert(kk.into(), v.clone());
            }
        }
        Value::Object(m)
    };
    json!({
        "pm1a_cnt": g("pm1a_cnt"), "pm1b_cnt": g("pm1b_cnt"), "hw_reduced": d["hw_reduced"],
        "sleep_control": g("sleep_control"), "reset": g("reset"),
        "S3": d["sleep"]["S3"], "S4": d["sleep"]["S4"], "S5": d["sleep"]["S5"],
    })
}

/// Beyond check.py: every \_Sx definition ACPICA's disassembly shows (table, conditional or
/// not, declared count, elements) is found by the walker, and nothing else.
fn check_definitions(
    id: &str,
    detail: &Value,
    info: &pm_trap::acpi::AcpiInfo,
    misses: &mut Vec<String>,
) {
    use pm_trap::acpi::aml::{DefContext, Element, NameValue};
    for state in [3u8, 4, 5] {
        let want: Vec<String> = detail[format!("S{state}")]["definitions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        format!(
                            "{} {} cond={} count={} {}",
                            d["table"].as_str().unwrap_or("?"),
                            d["type"].as_str().unwrap_or("?"),
                            d["conditional"],
                            d["declared_count"],
                            d["elements"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let have: Vec<String> = info
            .sleep_detail
            .iter()
            .filter(|d| d.state == state)
            .map(|d| {
                let file = d.table.rsplit('/').next().unwrap_or(&d.table);
                let (ty, count, elems) = match &d.value {
                    Some(NameValue::Package {
                        declared, elements, ..
                    }) => {
                        let e: Vec<Value> = elements
                            .iter()
                            .map(|e| match e {
                                Element::Integer(n) => json!(n),
                                other => json!(format!("{other:?}")),
                            })
                            .collect();
                        ("name_package", json!(declared), Value::Array(e))
                    }
                    _ => ("other", Value::Null, Value::Null),
                };
                format!(
                    "{file} {ty} cond={} count={count} {elems}",
                    d.context != DefContext::Unconditional
                )
            })
            .collect();
        if want != have {
            misses.push(format!(
                "{id} S{state} definitions: want {want:?} got {have:?}"
            ));
        }
    }
}

const FIELDS: [&str; 8] = [
    "pm1a_cnt",
    "pm1b_cnt",
    "hw_reduced",
    "sleep_control",
    "reset",
    "S3",
    "S4",
    "S5",
];

#[test]
fn ground_truth_all_machines_all_fields() {
    let dir = data_dir();
    let truth = std::fs::read_to_string(dir.join("ground-truth.jsonl")).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (shared/ must sit beside the workspace)",
            dir.display()
        )
    });
    let mut ok = [0usize; FIELDS.len()];
    let mut n = 0;
    let mut misses = Vec::new();
    let mut aml_errors = 0;
    for line in truth.lines().filter(|l| !l.trim().is_empty()) {
        let t: Value = serde_json::from_str(line).expect("ground truth line");
        let id = t["id"].as_str().expect("id");
        n += 1;
        let exp = expected(&t);
        let info = match pm_trap::acpi::inspect_dir(dir.join(id)) {
            Ok(i) => i,
            Err(e) => {
                misses.push(format!("{id}: error: {e}"));
                continue;
            }
        };
        aml_errors += info.aml_errors.len();
        check_definitions(id, &t["sleep_detail"], &info, &mut misses);
        let res = got(&serde_json::to_value(&info).expect("serialize"));
        for (i, k) in FIELDS.iter().enumerate() {
            if exp[k] == res[k] {
                ok[i] += 1;
            } else {
                misses.push(format!("{id} {k}: want {} got {}", exp[k], res[k]));
            }
        }
    }
    let summary: Vec<String> = FIELDS
        .iter()
        .zip(ok)
        .map(|(k, c)| format!("{k}={c}/{n}"))
        .collect();
    println!(
        "machines={n} {} (AML parse errors: {aml_errors})",
        summary.join(" ")
    );
    assert_eq!(n, 60, "expected the 60-machine DEV set");
    assert!(
        misses.is_empty(),
        "{} mismatches:\n{}\n{}",
        misses.len(),
        misses.join("\n"),
        summary.join(" ")
    );
}
