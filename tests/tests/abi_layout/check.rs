//! The check: the C probe built against each set of headers and run, its output compared
//! with the table of `main.rs` (every key used, every value equal), and the two tests.

use super::*;

// -------------------------------------------------------------------------------------------
// The C side
// -------------------------------------------------------------------------------------------

/// The probe's output: `key value` lines (the value is the last word), and which keys the
/// comparison looked at.
struct Probe {
    headers: String,
    values: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Probe {
    fn parse(text: &str) -> Probe {
        let mut values = BTreeMap::new();
        let mut headers = String::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad probe line {line:?}"));
            if key == "headers" {
                headers = value.to_string();
            } else {
                assert!(
                    values.insert(key.to_string(), value.to_string()).is_none(),
                    "duplicate probe key {key:?}"
                );
            }
        }
        Probe {
            headers,
            values,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    fn raw(&self, key: &str) -> Option<&str> {
        let v = self.values.get(key)?;
        self.used.borrow_mut().insert(key.to_string());
        Some(v)
    }

    fn num(&self, key: &str) -> Option<u64> {
        self.raw(key).map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("probe value of {key:?} is not a number: {v}"))
        })
    }

    fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.raw(key).map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex bytes"))
                .collect()
        })
    }
}

/// Build the probe against one set of headers and run it.
fn probe(dir: &Path, variant: &str, defines: &[&str]) -> Probe {
    let src = cc::c_dir().join("abi_layout.c");
    let shim = cc::c_dir().join("include");
    let exe = dir.join(format!("abi_layout-{variant}"));
    let mut args: Vec<String> = vec![
        "-std=gnu11".into(),
        "-Wall".into(),
        "-D__XEN_TOOLS__".into(),
        format!("-I{}", shim.display()),
        "-o".into(),
        exe.display().to_string(),
        src.display().to_string(),
    ];
    args.extend(defines.iter().map(|d| d.to_string()));
    cc::compile(&format!("abi_layout probe ({variant})"), &args);
    let out = cc::run(
        &format!("abi_layout probe ({variant})"),
        &mut Command::new(&exe),
    );
    Probe::parse(&String::from_utf8(out.stdout).expect("probe output is UTF-8"))
}

// -------------------------------------------------------------------------------------------
// Comparison
// -------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    mismatches: Vec<String>,
    structs: usize,
    fields: usize,
    constants: usize,
    samples: usize,
    bitfields: usize,
}

impl Tally {
    fn eq(&mut self, what: String, rust: u64, c: Option<u64>, ckey: &str) {
        match c {
            Some(c) if c == rust => {}
            Some(c) => self.mismatches.push(format!(
                "{what}: Rust {rust} (0x{rust:x}), C `{ckey}` {c} (0x{c:x})"
            )),
            None => self
                .mismatches
                .push(format!("{what}: Rust {rust}, C probe printed no `{ckey}`")),
        }
    }
    fn check(&mut self, what: String, ok: bool) {
        if !ok {
            self.mismatches.push(what);
        }
    }
}

fn compare(p: &Probe, t: &mut Tally) {
    for s in structs() {
        t.structs += 1;
        t.eq(
            format!("size_of::<{}>()", s.name),
            s.size as u64,
            p.num(&format!("sizeof {}", s.c)),
            &format!("sizeof(struct {})", s.c),
        );
        t.eq(
            format!("align_of::<{}>()", s.name),
            s.align as u64,
            p.num(&format!("alignof {}", s.c)),
            &format!("_Alignof(struct {})", s.c),
        );
        for f in &s.fields {
            t.fields += 1;
            let off = format!("offset {} {}", s.c, f.c);
            let size = format!("fieldsize {} {}", s.c, f.c);
            t.eq(
                format!("offset_of!({}, {})", s.name, f.name),
                f.offset as u64,
                p.num(&off),
                &off,
            );
            t.eq(
                format!("size of {}.{}", s.name, f.name),
                f.size as u64,
                p.num(&size),
                &size,
            );
        }
    }
    for (name, size, key) in types() {
        t.constants += 1;
        t.eq(format!("size_of::<{name}>()"), size as u64, p.num(key), key);
    }
    for (name, value, key) in constants() {
        t.constants += 1;
        t.eq(name.to_string(), value, p.num(key), key);
    }
    for (name, value, key, _why) in skipped_constants() {
        if let Some(c) = p.num(key) {
            t.constants += 1;
            t.eq(name.to_string(), value, Some(c), key);
        }
    }
    for (name, value, key) in const_fn_samples() {
        t.samples += 1;
        t.eq(format!("{name} ({key})"), value, p.num(key), key);
    }
    for (what, value, key) in encoder_layouts() {
        t.fields += 1;
        t.eq(what, value, p.num(key), key);
    }
    compare_ioreq_bits(p, t);
    compare_buf_ioreq_bits(p, t);
}

/// Bit positions in `struct ioreq` byte 30: the probe sets each C bit-field to all-ones in a
/// zeroed struct; the Rust setter must produce the same 32 bytes and the accessors must read
/// back exactly that field.
fn compare_ioreq_bits(p: &Probe, t: &mut Tally) {
    let rust = |f: fn(&mut Ioreq)| {
        let mut r = Ioreq::default();
        f(&mut r);
        r.to_bytes().to_vec()
    };
    let cases = [
        ("state", Some(rust(|r| r.set_state(0xF))), [0xF, 0, 0, 0]),
        (
            "data_is_ptr",
            Some(rust(|r| r.set_data_is_ptr(true))),
            [0, 1, 0, 0],
        ),
        ("dir", Some(rust(|r| r.set_dir(IOREQ_READ))), [0, 0, 1, 0]),
        ("df", Some(rust(|r| r.set_df(true))), [0, 0, 0, 1]),
        ("_pad1", None, [0, 0, 0, 0]), // no Rust setter; the accessors must ignore it
    ];
    for (field, rust_bytes, expect) in cases {
        t.bitfields += 1;
        let key = format!("bytes ioreq.{field}");
        let Some(c) = p.bytes(&key) else {
            t.mismatches.push(format!("C probe printed no `{key}`"));
            continue;
        };
        if let Some(r) = rust_bytes {
            t.check(
                format!(
                    "Ioreq bit-field {field} all-ones: Rust bytes {} != C bytes {}",
                    hex(&r),
                    hex(&c)
                ),
                r == c,
            );
        }
        let Ok(arr) = <[u8; 32]>::try_from(c.as_slice()) else {
            t.mismatches
                .push(format!("`{key}` is {} bytes, expected 32", c.len()));
            continue;
        };
        let r = Ioreq::from_bytes(&arr);
        let got = [
            r.state() as u64,
            r.data_is_ptr() as u64,
            r.dir() as u64,
            r.df() as u64,
        ];
        t.check(
            format!("Ioreq accessors (state, data_is_ptr, dir, df) on C bytes with {field}=all-ones: {got:?}, expected {expect:?}"),
            got == expect,
        );
    }
}

/// Bit positions in word 0 of `buf_ioreq`, likewise.
fn compare_buf_ioreq_bits(p: &Probe, t: &mut Tally) {
    let bytes = |b: BufIoreq| [b.word0.to_le_bytes(), b.data.to_le_bytes()].concat();
    let cases = [
        (
            "type",
            Some(BufIoreq::new(0xFF, 0, 0, 0, 0)),
            [0xFF, 0, 1, 0],
        ),
        ("pad", None, [0, 0, 1, 0]), // no Rust setter; the accessors must ignore it
        ("dir", Some(BufIoreq::new(0, 1, 0, 0, 0)), [0, 1, 1, 0]),
        ("size", Some(BufIoreq::new(0, 0, 3, 0, 0)), [0, 0, 8, 0]),
        (
            "addr",
            Some(BufIoreq::new(0, 0, 0, 0xF_FFFF, 0)),
            [0, 0, 1, 0xF_FFFF],
        ),
    ];
    for (field, rust, expect) in cases {
        t.bitfields += 1;
        let key = format!("bytes buf_ioreq.{field}");
        let Some(c) = p.bytes(&key) else {
            t.mismatches.push(format!("C probe printed no `{key}`"));
            continue;
        };
        if let Some(r) = rust {
            let r = bytes(r);
            t.check(
                format!(
                    "BufIoreq bit-field {field} all-ones: Rust bytes {} != C bytes {}",
                    hex(&r),
                    hex(&c)
                ),
                r == c,
            );
        }
        if c.len() != 8 {
            t.mismatches
                .push(format!("`{key}` is {} bytes, expected 8", c.len()));
            continue;
        }
        let b = BufIoreq {
            word0: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            data: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        };
        let got = [b.type_() as u32, b.dir() as u32, b.size_bytes(), b.addr()];
        t.check(
            format!("BufIoreq accessors (type, dir, size_bytes, addr) on C bytes with {field}=all-ones: {got:?}, expected {expect:?}"),
            got == expect,
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Top-level public items of xen-abi's root modules: (kind, name).
fn abi_rs_items() -> Vec<(&'static str, String)> {
    let kinds = [
        ("pub const fn ", "const fn"),
        ("pub const ", "const"),
        ("pub struct ", "struct"),
        ("pub type ", "type"),
        ("pub enum ", "enum"),
        ("pub union ", "union"),
        ("pub static ", "static"),
        ("pub fn ", "fn"),
        ("pub mod ", "mod"), // items in a submodule would escape this parser: flag it
    ];
    let mut items = Vec::new();
    for line in ABI_RS.iter().flat_map(|(_, src)| src.lines()) {
        // Only items at column 0: methods and test code are indented.
        for (prefix, kind) in kinds {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                items.push((kind, name));
                break;
            }
        }
    }
    items
}

#[test]
fn every_public_abi_item_is_compared() {
    let mut covered: BTreeSet<(&str, String)> = BTreeSet::new();
    for s in structs() {
        covered.insert(("struct", s.name.to_string()));
    }
    for (n, ..) in types() {
        covered.insert(("type", n.to_string()));
    }
    for (n, ..) in constants() {
        covered.insert(("const", n.to_string()));
    }
    for (n, ..) in skipped_constants() {
        covered.insert(("const", n.to_string()));
    }
    for (n, ..) in const_fn_samples() {
        covered.insert(("const fn", n.to_string()));
    }
    let parsed: Vec<&str> = ABI_RS.iter().map(|(m, _)| *m).collect();
    for line in ABI_LIB_RS.lines() {
        if let Some(m) = line.strip_prefix("mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                parsed.contains(&m),
                "xen-abi/src/lib.rs declares `mod {m}`, which this test does not parse: add it to ABI_RS"
            );
        }
    }
    let items = abi_rs_items();
    assert!(
        items.len() > 50,
        "parsed only {} items from xen-abi: is the parser still right?",
        items.len()
    );
    let missing: Vec<String> = items
        .iter()
        .filter(|(k, n)| !covered.contains(&(*k, n.clone())))
        .map(|(k, n)| format!("pub {k} {n}"))
        .collect();
    assert!(
        missing.is_empty(),
        "xen-abi/src/{{public,linux,domctl}}.rs have public items the layout test does not compare with the C headers: {}\n\
         add them to tests/tests/abi_layout/main.rs (and tests/c/abi_layout.c)",
        missing.join(", ")
    );
    // And the other way: nothing listed here that xen-abi no longer declares.
    let declared: BTreeSet<(&str, String)> = items.into_iter().collect();
    let stale: Vec<String> = covered
        .iter()
        .filter(|i| !declared.contains(i))
        .map(|(k, n)| format!("pub {k} {n}"))
        .collect();
    assert!(
        stale.is_empty(),
        "abi_layout/main.rs lists items xen-abi does not declare at top level: {}",
        stale.join(", ")
    );
}

#[test]
fn abi_matches_debian_headers() {
    let dir = cc::ScratchDir::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "abi_layout");
    let variants = [
        ("uapi", probe(dir.path(), "uapi", &[])),
        (
            "xen-sys",
            probe(dir.path(), "xen-sys", &["-DUSE_XEN_SYS_HEADERS"]),
        ),
    ];
    let mut failures = Vec::new();
    for (variant, p) in &variants {
        let mut t = Tally::default();
        compare(p, &mut t);
        let unused: Vec<&String> = p
            .values
            .keys()
            .filter(|k| !p.used.borrow().contains(*k))
            .collect();
        for k in unused {
            t.mismatches.push(format!(
                "C probe printed `{k}` but no Rust item was compared with it"
            ));
        }
        println!(
            "abi_layout [{variant}: {}]: {} structs, {} fields, {} constants/types, {} const-fn samples, \
             {} bit-field patterns compared; {} mismatches",
            p.headers,
            t.structs,
            t.fields,
            t.constants,
            t.samples,
            t.bitfields,
            t.mismatches.len()
        );
        for (name, _, key, why) in skipped_constants() {
            if !p.values.contains_key(key) {
                println!("  skipped {name}: {why}");
            }
        }
        failures.extend(t.mismatches.into_iter().map(|m| format!("[{variant}] {m}")));
    }
    // The two privcmd.h/evtchn.h copies must agree with each other too.
    let (a, b) = (&variants[0].1.values, &variants[1].1.values);
    for k in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        if a.get(k) != b.get(k) {
            failures.push(format!(
                "linux-libc-dev and libxen-dev headers disagree on `{k}`: {:?} vs {:?}",
                a.get(k),
                b.get(k)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "xen_abi does not match Debian's headers:\n  {}",
        failures.join("\n  ")
    );
}
