//! A small AML walker that finds `\_S3_`, `\_S4_` and `\_S5_` by walking the namespace of the
//! DSDT and the SSDTs (ACPI 6.0, 20 "ACPI Machine Language (AML) Specification"; \_Sx objects:
//! 7.4.2 "\_Sx (System States)").
//!
//! It is not an interpreter: nothing is evaluated. It parses every term of a definition block,
//! knows `PkgLength` (20.2.4), resolves name strings (20.2.2: root `\`, parent `^`, dual and
//! multi name prefixes) against the current scope, descends into `Scope`, `Device`,
//! `Processor`, `PowerResource`, `ThermalZone`, `If`/`Else`/`While` and (second pass) method
//! bodies, and skips every other term by its grammar. A definition whose absolute path is
//! `\_Sx_` is recorded with its context:
//! - `Name(_Sx, Package(){integer constants})` at load time, outside any `If`/`Else`/`While`
//!   and outside methods: a static value `[SLP_TYPa, SLP_TYPb]`;
//! - a `Method`, an `Alias`, a definition under `If`/`Else`/`While` or inside a method body, or a
//!   package with a non-constant element: "dynamic", never guessed;
//! - no definition: absent.
//!
//! Method invocations are the one ambiguity of AML (an invocation's arguments follow the name
//! with no length): a first pass collects every method (and `External` method declaration)
//! of every table with its argument count, and the second pass uses that namespace, with the
//! ACPI search rules for single-segment names (20.2.2, 5.3 "ACPI Namespace"). A term that still
//! cannot be parsed ends the innermost enclosing `PkgLength` block (its extent is known), never
//! the walk; such errors are reported.
//!
//! Hostile input: every read is bounds-checked, recursion is limited to [`MAX_DEPTH`], and
//! nothing allocates more than a constant factor of the input size.
//!
//! Length: this file is a parser whose length is its content -- the cursor, name strings, the
//! opcode signature tables and one function per term class of the AML grammar (ACPI 6.0, 20),
//! walked by one `Walker`; it is kept in one file so that the grammar reads in one place.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use super::tables::{self, RawTable, HEADER_LEN};

/// Deepest nesting of scopes and expressions followed; deeper input is reported as an error.
pub const MAX_DEPTH: u32 = 96;

/// Longest absolute name path followed, in segments (real tables stay under 10).
pub const MAX_PATH_SEGS: usize = 64;

/// Most bytes of namespace keys kept across all tables (real machines: well under 1 MiB).
/// With paths of at most [`MAX_PATH_SEGS`] this bounds the walker's memory on hostile input.
pub const MAX_NAMESPACE_BYTES: usize = 32 << 20;

/// Most errors kept as text (the rest are only counted).
const MAX_ERRORS: usize = 16;

/// Most package elements kept per package (more are parsed and counted, not stored).
const MAX_ELEMENTS: usize = 16;

type Seg = [u8; 4];

/// What a \_Sx object yields for the sleep trap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SleepObject {
    /// No `\_Sx_` object: OSPM treats the state as unsupported.
    Absent,
    /// `[SLP_TYPa, SLP_TYPb]` from a static package (ACPICA `AcpiGetSleepTypeData`: the first
    /// two elements, each truncated to 8 bits; a 1-element package gives a = low byte, b = the
    /// next byte).
    Static([u8; 2]),
    /// A method, a conditional definition, or a package with non-constant elements: the value
    /// is only known at run time.
    Dynamic(String),
    /// Present but unusable (e.g. an empty package or a non-integer element): ACPICA fails to
    /// read it, so OSPM does not use the state.
    Invalid(String),
}

impl SleepObject {
    /// The static `[SLP_TYPa, SLP_TYPb]`, if any.
    pub fn static_value(&self) -> Option<[u8; 2]> {
        match self {
            SleepObject::Static(v) => Some(*v),
            _ => None,
        }
    }
}

/// JSON: `[a, b]`, `"dynamic"`, or `null` (absent or invalid).
impl Serialize for SleepObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SleepObject::Static(v) => v.serialize(s),
            SleepObject::Dynamic(_) => s.serialize_str("dynamic"),
            SleepObject::Absent | SleepObject::Invalid(_) => s.serialize_none(),
        }
    }
}

impl fmt::Display for SleepObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SleepObject::Absent => f.write_str("absent"),
            SleepObject::Static([a, b]) => write!(f, "SLP_TYPa={a} SLP_TYPb={b}"),
            SleepObject::Dynamic(why) => write!(f, "dynamic ({why})"),
            SleepObject::Invalid(why) => write!(f, "invalid ({why})"),
        }
    }
}

/// The kind of object a `\_Sx_` definition creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefKind {
    /// `Name`.
    Name,
    /// `Method`.
    Method,
    /// `Alias` (to some other object).
    Alias,
    /// Any other named object (Device, OperationRegion, field, ...).
    Other,
}

/// Where a definition stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefContext {
    /// Created when the table is loaded, unconditionally.
    Unconditional,
    /// Inside `If`, `Else` or `While` at load time.
    Conditional,
    /// Inside a method body (created only when the method runs).
    InMethod,
}

/// A package element, as far as the walker needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Element {
    /// An integer constant (Zero, One, Ones, Byte/Word/DWord/QWord constants).
    Integer(u64),
    /// A string constant.
    String,
    /// A buffer.
    Buffer,
    /// A nested package.
    Package,
    /// Anything else: a name reference, `Revision`, an expression.
    NonConstant,
}

/// The value a `Name` gives a `\_Sx_` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameValue {
    /// `Package` / `VarPackage` with a constant count.
    Package {
        /// NumElements as declared.
        declared: u64,
        /// Initializers present (all of them counted, at most 16 stored in `elements`).
        present: usize,
        /// The first initializers.
        elements: Vec<Element>,
        /// Whether one of the first `declared` initializers is not a constant.
        non_constant: bool,
    },
    /// `VarPackage` whose count is not a constant.
    VarPackage,
    /// Not a package.
    NotPackage(Element),
}

/// One definition of `\_S3_`, `\_S4_` or `\_S5_`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Definition {
    /// The table it is in.
    pub table: String,
    /// 3, 4 or 5.
    pub state: u8,
    /// Object kind.
    pub kind: DefKind,
    /// Context.
    pub context: DefContext,
    /// For `Name`: its value.
    pub value: Option<NameValue>,
}

/// What the walk found in all tables.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SleepAnalysis {
    /// Every definition of a root `\_Sx_`, in load order.
    pub definitions: Vec<Definition>,
    /// Parse errors (table, offset, what); each ended one `PkgLength` block early.
    pub errors: Vec<String>,
    /// Number of parse errors, including those not kept in `errors`.
    pub error_count: usize,
}

impl SleepAnalysis {
    /// The \_Sx object for state 3, 4 or 5.
    ///
    /// Load-time definitions count in load order and the first one decides (a later one fails
    /// with AE_ALREADY_EXISTS if the first was created; a conditional first one may or may not
    /// have been): conditional, method or alias means dynamic, a `Name` gives its package.
    /// Definitions inside method bodies only ever run after loading: they make an otherwise
    /// absent object dynamic.
    pub fn state(&self, state: u8) -> SleepObject {
        let mut defs = self.definitions.iter().filter(|d| d.state == state);
        let load_time = defs.clone().find(|d| d.context != DefContext::InMethod);
        let Some(d) = load_time else {
            return match defs.next() {
                Some(d) => {
                    SleepObject::Dynamic(format!("created inside a method body ({})", d.table))
                }
                None => SleepObject::Absent,
            };
        };
        if d.context == DefContext::Conditional {
            return SleepObject::Dynamic(format!("declared inside If/Else/While ({})", d.table));
        }
        match (d.kind, &d.value) {
            (DefKind::Method, _) => SleepObject::Dynamic(format!("a method ({})", d.table)),
            (DefKind::Alias, _) => SleepObject::Dynamic(format!("an alias ({})", d.table)),
            (DefKind::Other, _) | (DefKind::Name, None) => {
                SleepObject::Invalid(format!("not a package object ({})", d.table))
            }
            (DefKind::Name, Some(v)) => package_value(v, &d.table),
        }
    }
}

/// ACPICA `AcpiGetSleepTypeData` on a static package. The package count is
/// min(NumElements, initializers): ACPICA truncates extra initializers and its predefined-name
/// repair removes the null padding of a short initializer list.
fn package_value(v: &NameValue, table: &str) -> SleepObject {
    let (declared, present, elements, non_constant) = match v {
        NameValue::Package {
            declared,
            present,
            elements,
            non_constant,
        } => (*declared, *present, elements, *non_constant),
        NameValue::VarPackage => {
            return SleepObject::Dynamic(format!("VarPackage with a computed count ({table})"))
        }
        NameValue::NotPackage(e) => {
            return SleepObject::Invalid(format!("a {e:?}, not a package ({table})"))
        }
    };
    if non_constant {
        return SleepObject::Dynamic(format!("package with non-constant elements ({table})"));
    }
    let count = declared.min(present as u64) as usize;
    match &elements[..count.min(elements.len())] {
        [] => SleepObject::Invalid(format!("empty package ({table})")),
        [Element::Integer(v)] => SleepObject::Static([*v as u8, (*v >> 8) as u8]),
        [Element::Integer(a), Element::Integer(b), ..] => SleepObject::Static([*a as u8, *b as u8]),
        _ => SleepObject::Invalid(format!("package elements are not integers ({table})")),
    }
}

/// Walk the DSDT and SSDTs (in load order: DSDT first, then SSDTs) and collect the \_Sx
/// definitions. Tables whose header is unusable or whose signature is neither `DSDT` nor `SSDT`
/// are skipped with a warning.
pub fn analyze(tables: &[RawTable<'_>], warnings: &mut Vec<String>) -> SleepAnalysis {
    let mut bodies: Vec<(&str, &[u8])> = Vec::new();
    for t in tables {
        match tables::check(t.name, t.bytes, warnings) {
            Err(why) => tables::warn(warnings, format!("{}: skipped: {why}", t.name)),
            Ok(c) if &c.signature != b"DSDT" && &c.signature != b"SSDT" => tables::warn(
                warnings,
                format!(
                    "{}: skipped: signature {:?} is neither DSDT nor SSDT",
                    t.name,
                    String::from_utf8_lossy(&c.signature)
                ),
            ),
            Ok(c) => bodies.push((t.name, &c.table[HEADER_LEN..])),
        }
    }
    let mut w = Walker {
        ns: BTreeMap::new(),
        per_table: vec![BTreeMap::new(); bodies.len()],
        externals: BTreeMap::new(),
        table_idx: 0,
        ns_bytes: 0,
        locals: BTreeMap::new(),
        collect: true,
        table: "",
        defs: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
    };
    w.pass(&bodies);
    w.collect = false;
    w.errors.clear();
    w.error_count = 0;
    w.pass(&bodies);
    SleepAnalysis {
        definitions: w.defs,
        errors: w.errors,
        error_count: w.error_count,
    }
}

/// Why a term could not be parsed.
#[derive(Debug)]
enum PErr {
    Eof,
    PkgLength,
    Opcode(u8, Option<u8>),
    Name(u8),
    Depth,
    Unterminated,
    Path,
}

impl fmt::Display for PErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PErr::Eof => f.write_str("unexpected end of block"),
            PErr::PkgLength => f.write_str("PkgLength outside its enclosing block"),
            PErr::Opcode(a, None) => write!(f, "unknown opcode {a:#04x}"),
            PErr::Opcode(a, Some(b)) => write!(f, "unknown opcode {a:#04x} {b:#04x}"),
            PErr::Name(b) => write!(f, "bad name string (byte {b:#04x})"),
            PErr::Depth => write!(f, "nesting deeper than {MAX_DEPTH}"),
            PErr::Unterminated => f.write_str("unterminated string"),
            PErr::Path => write!(
                f,
                "name path above the root or longer than {MAX_PATH_SEGS} segments"
            ),
        }
    }
}

type R<T> = Result<T, PErr>;

/// A bounded view of one block: `d[pos..end]`.
#[derive(Clone, Copy)]
struct Cur<'a> {
    d: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cur<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.end
    }
    fn peek(&self) -> R<u8> {
        if self.pos < self.end {
            self.d.get(self.pos).copied().ok_or(PErr::Eof)
        } else {
            Err(PErr::Eof)
        }
    }
    fn peek_at(&self, n: usize) -> Option<u8> {
        let p = self.pos.checked_add(n)?;
        if p < self.end {
            self.d.get(p).copied()
        } else {
            None
        }
    }
    fn byte(&mut self) -> R<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let e = self.pos.checked_add(n).ok_or(PErr::Eof)?;
        if e > self.end {
            return Err(PErr::Eof);
        }
        let s = self.d.get(self.pos..e).ok_or(PErr::Eof)?;
        self.pos = e;
        Ok(s)
    }
    fn uint(&mut self, n: usize) -> R<u64> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |v, b| (v << 8) | *b as u64))
    }
    /// PkgLength encoding (20.2.4): the value only (used for field widths).
    fn pkg_length_value(&mut self) -> R<usize> {
        let lead = self.byte()?;
        let follow = (lead >> 6) as usize;
        if follow == 0 {
            return Ok((lead & 0x3F) as usize);
        }
        let mut len = (lead & 0x0F) as usize;
        for i in 0..follow {
            len |= (self.byte()? as usize) << (4 + 8 * i);
        }
        Ok(len)
    }
    /// A PkgLength-delimited block starting here: returns a view of its contents (after the
    /// PkgLength bytes) and moves `self` past the whole block.
    fn pkg(&mut self) -> R<Cur<'a>> {
        let start = self.pos;
        let len = self.pkg_length_value()?;
        let end = start.checked_add(len).ok_or(PErr::PkgLength)?;
        if end > self.end || end < self.pos {
            return Err(PErr::PkgLength);
        }
        let inner = Cur {
            d: self.d,
            pos: self.pos,
            end,
        };
        self.pos = end;
        Ok(inner)
    }
}

/// A decoded NameString.
struct NameString {
    root: bool,
    parents: usize,
    segs: Vec<Seg>,
}

fn is_lead(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'_'
}

fn seg_at(c: &mut Cur<'_>) -> R<Seg> {
    let s = c.take(4)?;
    Ok([s[0], s[1], s[2], s[3]])
}

/// NameString := <RootChar NamePath> | <PrefixPath NamePath> (20.2.2).
fn name_string(c: &mut Cur<'_>) -> R<NameString> {
    let mut root = false;
    let mut parents = 0;
    if c.peek()? == b'\\' {
        root = true;
        c.pos += 1;
    } else {
        while c.peek()? == b'^' {
            parents += 1;
            c.pos += 1;
        }
    }
    let segs = match c.peek()? {
        0x00 => {
            c.pos += 1;
            Vec::new()
        }
        0x2E => {
            c.pos += 1;
            vec![seg_at(c)?, seg_at(c)?]
        }
        0x2F => {
            c.pos += 1;
            let n = c.byte()? as usize;
            // Bounded by the input: each segment consumes 4 bytes.
            let mut v = Vec::with_capacity(n.min((c.end - c.pos) / 4));
            for _ in 0..n {
                v.push(seg_at(c)?);
            }
            v
        }
        b if is_lead(b) => vec![seg_at(c)?],
        b => return Err(PErr::Name(b)),
    };
    Ok(NameString {
        root,
        parents,
        segs,
    })
}

/// The absolute path a definition with this name creates in `scope`; `None` if `^` climbs
/// above the root or the path is longer than [`MAX_PATH_SEGS`].
fn resolve(scope: &[Seg], n: &NameString) -> Option<Vec<Seg>> {
    let base = if n.root {
        &[][..]
    } else {
        scope.get(..scope.len().checked_sub(n.parents)?)?
    };
    if base.len() + n.segs.len() > MAX_PATH_SEGS {
        return None;
    }
    let mut p = base.to_vec();
    p.extend_from_slice(&n.segs);
    Some(p)
}

/// Which root object a path is: `\_S3_` -> 3, `\_S4_` -> 4, `\_S5_` -> 5.
fn sleep_target(path: &[Seg]) -> Option<u8> {
    match path {
        [[b'_', b'S', b'3', b'_']] => Some(3),
        [[b'_', b'S', b'4', b'_']] => Some(4),
        [[b'_', b'S', b'5', b'_']] => Some(5),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug)]
enum Obj {
    Method(u8),
    Other,
}

/// Operand kinds of the fixed-arity opcodes.
#[derive(Clone, Copy)]
enum A {
    /// TermArg.
    T,
    /// SuperName.
    S,
    /// Target (SuperName or NullName).
    R,
    /// NameString (no invocation).
    N,
    /// Byte data.
    B,
    /// Word data.
    W,
    /// DWord data.
    D,
}

use A::*;

/// Operands of the one-byte expression and statement opcodes (20.2.5.3, 20.2.5.4, 20.3).
fn signature(op: u8) -> Option<&'static [A]> {
    Some(match op {
        0x70 => &[T, S],                  // Store
        0x71 => &[S],                     // RefOf
        0x72 => &[T, T, R],               // Add
        0x73 => &[T, T, R],               // Concat
        0x74 => &[T, T, R],               // Subtract
        0x75 | 0x76 => &[S],              // Increment, Decrement
        0x77 => &[T, T, R],               // Multiply
        0x78 => &[T, T, R, R],            // Divide
        0x79..=0x7F => &[T, T, R],        // ShiftLeft, ShiftRight, And, Nand, Or, Nor, Xor
        0x80..=0x82 => &[T, R],           // Not, FindSetLeftBit, FindSetRightBit
        0x83 => &[T],                     // DerefOf
        0x84 | 0x85 => &[T, T, R],        // ConcatRes, Mod
        0x86 => &[S, T],                  // Notify
        0x87 => &[S],                     // SizeOf
        0x88 => &[T, T, R],               // Index
        0x89 => &[T, B, T, B, T, T],      // Match
        0x8A..=0x8D | 0x8F => &[T, T, N], // CreateDWord/Word/Byte/Bit/QWordField
        0x8E => &[S],                     // ObjectType
        0x90 | 0x91 => &[T, T],           // LAnd, LOr
        0x92 => &[T],                     // LNot
        0x93..=0x95 => &[T, T],           // LEqual, LGreater, LLess
        0x96..=0x99 => &[T, R],           // ToBuffer, ToDecimalString, ToHexString, ToInteger
        0x9C => &[T, T, R],               // ToString
        0x9D => &[T, S],                  // CopyObject
        0x9E => &[T, T, T, R],            // Mid
        0x9F | 0xA3 | 0xA5 | 0xCC => &[], // Continue, Noop, Break, BreakPoint
        0xA4 => &[T],                     // Return
        _ => return None,
    })
}

/// Operands of the `0x5B`-prefixed expression and statement opcodes.
fn ext_signature(op: u8) -> Option<&'static [A]> {
    Some(match op {
        0x12 => &[S, R],             // CondRefOf
        0x13 => &[T, T, T, N],       // CreateField
        0x1F => &[T, T, T, T, T, T], // LoadTable
        0x20 => &[N, S],             // Load
        0x21 | 0x22 => &[T],         // Stall, Sleep
        0x23 => &[S, W],             // Acquire
        0x24 | 0x26 | 0x27 => &[S],  // Signal, Reset, Release
        0x25 => &[S, T],             // Wait
        0x28 | 0x29 => &[T, R],      // FromBCD, ToBCD
        0x2A => &[S],                // Unload
        0x30 | 0x31 | 0x33 => &[],   // Revision, Debug, Timer
        0x32 => &[B, D, T],          // Fatal
        _ => return None,
    })
}

struct Walker<'t> {
    /// Every named object seen in the first pass (absolute path -> kind); first one wins.
    ns: BTreeMap<Vec<Seg>, Obj>,
    /// The same, per table: a table's own definitions win over other tables' when resolving
    /// its invocations (real firmware has SSDTs that redefine a DSDT method with another
    /// argument count).
    per_table: Vec<BTreeMap<Vec<Seg>, Obj>>,
    /// `External(..., MethodObj, N)` declarations: used only where no definition exists.
    externals: BTreeMap<Vec<Seg>, Obj>,
    /// Index of the table being walked.
    table_idx: usize,
    /// Bytes of keys kept in the maps above (see [`MAX_NAMESPACE_BYTES`]).
    ns_bytes: usize,
    /// Second pass: objects created so far by the method body being walked (they shadow
    /// load-time objects of the same name, e.g. a local `Name(OPTS)` vs a root `Method(OPTS)`).
    locals: BTreeMap<Vec<Seg>, Obj>,
    /// First pass: fill `ns`. Second pass: record \_Sx definitions, enter method bodies.
    collect: bool,
    table: &'t str,
    defs: Vec<Definition>,
    errors: Vec<String>,
    error_count: usize,
}

impl<'t> Walker<'t> {
    /// One pass over every table body, in load order, from the root scope. `analyze` makes
    /// two (collect, then record) that differ only in `collect`.
    fn pass(&mut self, bodies: &[(&'t str, &[u8])]) {
        for (i, &(name, aml)) in bodies.iter().enumerate() {
            self.table = name;
            self.table_idx = i;
            self.term_list(
                Cur {
                    d: aml,
                    pos: 0,
                    end: aml.len(),
                },
                &[],
                DefContext::Unconditional,
                0,
            );
        }
    }

    fn error(&mut self, e: PErr, pos: usize) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            // Offsets are given from the start of the table, as a disassembler shows them.
            self.errors.push(format!(
                "{}: offset {:#x}: {e}",
                self.table,
                pos + HEADER_LEN
            ));
        }
    }

    /// TermList: parse terms to the end of the block; an error ends the block.
    fn term_list(&mut self, mut c: Cur<'_>, scope: &[Seg], ctx: DefContext, depth: u32) {
        while !c.at_end() {
            let at = c.pos;
            if let Err(e) = self.term(&mut c, scope, ctx, depth) {
                self.error(e, at.max(c.pos));
                return;
            }
        }
    }

    /// Record a named object.
    fn define(&mut self, path: Option<Vec<Seg>>, obj: Obj, ctx: DefContext) -> Option<u8> {
        let path = path?;
        if self.collect {
            if ctx != DefContext::InMethod && self.budget(&path, 2) {
                if let Some(t) = self.per_table.get_mut(self.table_idx) {
                    t.entry(path.clone()).or_insert(obj);
                }
                self.ns.entry(path).or_insert(obj);
            }
            return None;
        }
        if ctx == DefContext::InMethod && self.budget(&path, 1) {
            self.locals.entry(path.clone()).or_insert(obj);
        }
        let state = sleep_target(&path)?;
        let kind = match obj {
            Obj::Method(_) => DefKind::Method,
            Obj::Other => DefKind::Other,
        };
        self.defs.push(Definition {
            table: self.table.to_owned(),
            state,
            kind,
            context: ctx,
            value: None,
        });
        Some(state)
    }

    /// Account for `copies` map keys of `path`; false once the namespace budget is spent.
    fn budget(&mut self, path: &[Seg], copies: usize) -> bool {
        // Key bytes plus a rough per-entry overhead.
        let cost = copies * (path.len() * 4 + 64);
        if self.ns_bytes + cost > MAX_NAMESPACE_BYTES {
            if self.ns_bytes <= MAX_NAMESPACE_BYTES {
                self.ns_bytes = MAX_NAMESPACE_BYTES + 1;
                tracing::warn!("AML namespace larger than {MAX_NAMESPACE_BYTES} bytes: further names not recorded");
            }
            return false;
        }
        self.ns_bytes += cost;
        true
    }

    /// The object at an absolute path: method locals, then this table's objects, then all
    /// tables' objects, then `External` declarations.
    fn lookup(&self, path: &[Seg]) -> Option<Obj> {
        self.locals
            .get(path)
            .or_else(|| self.per_table.get(self.table_idx).and_then(|t| t.get(path)))
            .or_else(|| self.ns.get(path))
            .or_else(|| self.externals.get(path))
            .copied()
    }

    /// Argument count if `n`, looked up from `scope`, names a method.
    fn method_args(&self, scope: &[Seg], n: &NameString) -> Option<u8> {
        if n.segs.is_empty() {
            return None;
        }
        let found = if !n.root && n.parents == 0 && n.segs.len() == 1 {
            // Search rules: the scope, then each parent up to the root; the nearest object wins.
            let mut p = scope.to_vec();
            loop {
                p.push(n.segs[0]);
                if let Some(o) = self.lookup(&p) {
                    break o;
                }
                p.pop();
                p.pop()?;
            }
        } else {
            self.lookup(&resolve(scope, n)?)?
        };
        match found {
            Obj::Method(a) => Some(a),
            Obj::Other => None,
        }
    }

    fn term(&mut self, c: &mut Cur<'_>, scope: &[Seg], ctx: DefContext, depth: u32) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(PErr::Depth);
        }
        let d = depth + 1;
        match c.peek()? {
            0x10 => {
                // DefScope := ScopeOp PkgLength NameString TermList
                c.pos += 1;
                let mut b = c.pkg()?;
                let n = name_string(&mut b)?;
                match resolve(scope, &n) {
                    Some(p) => self.term_list(b, &p, ctx, d),
                    None => self.error(PErr::Path, b.pos),
                }
            }
            0x08 => {
                // DefName := NameOp NameString DataRefObject
                c.pos += 1;
                let n = name_string(c)?;
                let path = resolve(scope, &n);
                let target = self.define(path, Obj::Other, ctx);
                let value = self.data_ref(c, scope, d, target.is_some())?;
                if target.is_some() {
                    if let Some(def) = self.defs.last_mut() {
                        def.kind = DefKind::Name;
                        def.value = Some(value);
                    }
                }
            }
            0x06 => {
                // DefAlias := AliasOp NameString(source) NameString(alias)
                c.pos += 1;
                name_string(c)?;
                let n = name_string(c)?;
                if self.define(resolve(scope, &n), Obj::Other, ctx).is_some() {
                    if let Some(def) = self.defs.last_mut() {
                        def.kind = DefKind::Alias;
                    }
                }
            }
            0x14 => {
                // DefMethod := MethodOp PkgLength NameString MethodFlags TermList
                c.pos += 1;
                let mut b = c.pkg()?;
                let n = name_string(&mut b)?;
                let flags = b.byte()?;
                let path = resolve(scope, &n);
                self.define(path.clone(), Obj::Method(flags & 7), ctx);
                if !self.collect {
                    if let Some(p) = path {
                        // Names a method creates are relative to the method's own scope.
                        let outer = ctx == DefContext::InMethod;
                        if !outer {
                            self.locals.clear();
                        }
                        self.term_list(b, &p, DefContext::InMethod, d);
                        if !outer {
                            self.locals.clear();
                        }
                    }
                }
            }
            0x15 => {
                // DefExternal := ExternalOp NameString ObjectType ArgumentCount
                c.pos += 1;
                let n = name_string(c)?;
                let ty = c.byte()?;
                let argc = c.byte()?;
                if self.collect && ty == 8 {
                    if let Some(p) = resolve(scope, &n).filter(|p| self.budget(p, 1)) {
                        // A declaration only: a definition (in any table) wins.
                        self.externals.entry(p).or_insert(Obj::Method(argc.min(7)));
                    }
                }
            }
            0xA0 | 0xA2 => {
                // DefIfElse := IfOp PkgLength Predicate TermList DefElse
                // DefWhile := WhileOp PkgLength Predicate TermList
                c.pos += 1;
                let mut b = c.pkg()?;
                match self.term_arg(&mut b, scope, d) {
                    Ok(()) => self.term_list(b, scope, ctx.max(DefContext::Conditional), d),
                    Err(e) => self.error(e, b.pos),
                }
            }
            0xA1 => {
                // DefElse := ElseOp PkgLength TermList
                c.pos += 1;
                let b = c.pkg()?;
                self.term_list(b, scope, ctx.max(DefContext::Conditional), d);
            }
            0x8A..=0x8D | 0x8F => {
                // CreateXField := Op SourceBuff ByteIndex/BitIndex NameString
                c.pos += 1;
                self.term_arg(c, scope, d)?;
                self.term_arg(c, scope, d)?;
                let n = name_string(c)?;
                self.define(resolve(scope, &n), Obj::Other, ctx);
            }
            0x5B => self.ext_term(c, scope, ctx, d)?,
            _ => self.term_arg(c, scope, d)?,
        }
        Ok(())
    }

    /// The `0x5B`-prefixed named objects; other extended opcodes are expressions/statements.
    fn ext_term(&mut self, c: &mut Cur<'_>, scope: &[Seg], ctx: DefContext, d: u32) -> R<()> {
        let Some(op) = c.peek_at(1) else {
            return Err(PErr::Eof);
        };
        // Bytes after the NameString of the scoped named objects (20.2.5.2).
        let skip = match op {
            0x82 | 0x85 => Some(0), // Device, ThermalZone
            0x83 => Some(6),        // Processor: ProcID(1) PblkAddr(4) PblkLen(1)
            0x84 => Some(3),        // PowerResource: SystemLevel(1) ResourceOrder(2)
            _ => None,
        };
        if let Some(skip) = skip {
            c.pos += 2;
            let mut b = c.pkg()?;
            let n = name_string(&mut b)?;
            b.take(skip)?;
            let path = resolve(scope, &n);
            self.define(path.clone(), Obj::Other, ctx);
            match path {
                Some(p) => self.term_list(b, &p, ctx, d),
                None => self.error(PErr::Path, b.pos),
            }
            return Ok(());
        }
        match op {
            0x80 => {
                // DefOpRegion := OpRegionOp NameString RegionSpace RegionOffset RegionLen
                c.pos += 2;
                let n = name_string(c)?;
                c.byte()?;
                self.term_arg(c, scope, d)?;
                self.term_arg(c, scope, d)?;
                self.define(resolve(scope, &n), Obj::Other, ctx);
            }
            0x81 | 0x86 | 0x87 => {
                // DefField := FieldOp PkgLength NameString FieldFlags FieldList
                // DefIndexField := IndexFieldOp PkgLength NameString NameString FieldFlags FieldList
                // DefBankField := BankFieldOp PkgLength NameString NameString BankValue FieldFlags FieldList
                c.pos += 2;
                let mut b = c.pkg()?;
                name_string(&mut b)?;
                if op != 0x81 {
                    name_string(&mut b)?;
                }
                if op == 0x87 {
                    self.term_arg(&mut b, scope, d)?;
                }
                b.byte()?;
                if let Err(e) = self.field_list(&mut b, scope, ctx) {
                    self.error(e, b.pos);
                }
            }
            0x01 => {
                // DefMutex := MutexOp NameString SyncFlags
                c.pos += 2;
                let n = name_string(c)?;
                c.byte()?;
                self.define(resolve(scope, &n), Obj::Other, ctx);
            }
            0x02 => {
                // DefEvent := EventOp NameString
                c.pos += 2;
                let n = name_string(c)?;
                self.define(resolve(scope, &n), Obj::Other, ctx);
            }
            0x88 => {
                // DefDataRegion := DataRegionOp NameString TermArg TermArg TermArg
                c.pos += 2;
                let n = name_string(c)?;
                for _ in 0..3 {
                    self.term_arg(c, scope, d)?;
                }
                self.define(resolve(scope, &n), Obj::Other, ctx);
            }
            0x13 => {
                // DefCreateField := CreateFieldOp SourceBuff BitIndex NumBits NameString
                c.pos += 2;
                for _ in 0..3 {
                    self.term_arg(c, scope, d)?;
                }
                let n = name_string(c)?;
                self.define(resolve(scope, &n), Obj::Other, ctx);
            }
            _ => self.term_arg(c, scope, d)?,
        }
        Ok(())
    }

    /// FieldList (20.2.5.2): the field units are named objects of `scope`.
    fn field_list(&mut self, b: &mut Cur<'_>, scope: &[Seg], ctx: DefContext) -> R<()> {
        while !b.at_end() {
            match b.peek()? {
                // ReservedField := 0x00 PkgLength
                0x00 => {
                    b.pos += 1;
                    b.pkg_length_value()?;
                }
                // AccessField := 0x01 AccessType AccessAttrib
                0x01 => {
                    b.take(3)?;
                }
                // ConnectField := <0x02 NameString> | <0x02 BufferData>
                0x02 => {
                    b.pos += 1;
                    if b.peek()? == 0x11 {
                        b.pos += 1;
                        b.pkg()?;
                    } else {
                        name_string(b)?;
                    }
                }
                // ExtendedAccessField := 0x03 AccessType ExtendedAccessAttrib AccessLength
                0x03 => {
                    b.take(4)?;
                }
                // NamedField := NameSeg PkgLength
                x if is_lead(x) => {
                    let seg = seg_at(b)?;
                    b.pkg_length_value()?;
                    let mut p = scope.to_vec();
                    p.push(seg);
                    self.define(Some(p), Obj::Other, ctx);
                }
                x => return Err(PErr::Name(x)),
            }
        }
        Ok(())
    }

    /// DataRefObject of a `Name` (20.2.3); `capture` keeps the package contents.
    fn data_ref(&mut self, c: &mut Cur<'_>, scope: &[Seg], d: u32, capture: bool) -> R<NameValue> {
        let op = c.peek()?;
        if op != 0x12 && op != 0x13 {
            return Ok(NameValue::NotPackage(self.element(c, scope, d)?));
        }
        // DefPackage := PackageOp PkgLength NumElements PackageElementList
        // DefVarPackage := VarPackageOp PkgLength VarNumElements PackageElementList
        c.pos += 1;
        let mut b = c.pkg()?;
        let declared = if op == 0x12 {
            Some(b.byte()? as u64)
        } else {
            self.const_int(&mut b, scope, d)?
        };
        let mut elements = Vec::new();
        let mut present = 0usize;
        let mut non_constant = false;
        while !b.at_end() {
            let e = self.element(&mut b, scope, d)?;
            if (present as u64) < declared.unwrap_or(0) && e == Element::NonConstant {
                non_constant = true;
            }
            present += 1;
            if capture && elements.len() < MAX_ELEMENTS {
                elements.push(e);
            }
        }
        Ok(match declared {
            Some(declared) => NameValue::Package {
                declared,
                present,
                elements,
                non_constant,
            },
            None => NameValue::VarPackage,
        })
    }

    /// A TermArg that is an integer constant: `Some(value)`; any other TermArg: `None`.
    fn const_int(&mut self, c: &mut Cur<'_>, scope: &[Seg], d: u32) -> R<Option<u64>> {
        match c.peek()? {
            0x00 | 0x01 | 0xFF | 0x0A | 0x0B | 0x0C | 0x0E => match self.element(c, scope, d)? {
                Element::Integer(n) => Ok(Some(n)),
                _ => Ok(None),
            },
            _ => {
                self.term_arg(c, scope, d)?;
                Ok(None)
            }
        }
    }

    /// PackageElement := DataRefObject | NameString (a name here is a reference, never an
    /// invocation).
    fn element(&mut self, c: &mut Cur<'_>, scope: &[Seg], d: u32) -> R<Element> {
        if d > MAX_DEPTH {
            return Err(PErr::Depth);
        }
        let op = c.peek()?;
        Ok(match op {
            0x00 => {
                c.pos += 1;
                Element::Integer(0)
            }
            0x01 => {
                c.pos += 1;
                Element::Integer(1)
            }
            0xFF => {
                c.pos += 1;
                Element::Integer(u64::MAX)
            }
            0x0A | 0x0B | 0x0C | 0x0E => {
                c.pos += 1;
                let n = match op {
                    0x0A => 1,
                    0x0B => 2,
                    0x0C => 4,
                    _ => 8,
                };
                Element::Integer(c.uint(n)?)
            }
            0x0D => {
                c.pos += 1;
                string(c)?;
                Element::String
            }
            0x11 => {
                c.pos += 1;
                c.pkg()?;
                Element::Buffer
            }
            0x12 | 0x13 => {
                c.pos += 1;
                c.pkg()?;
                Element::Package
            }
            b'\\' | b'^' | 0x2E | 0x2F => {
                name_string(c)?;
                Element::NonConstant
            }
            b if is_lead(b) => {
                name_string(c)?;
                Element::NonConstant
            }
            _ => {
                self.term_arg(c, scope, d + 1)?;
                Element::NonConstant
            }
        })
    }

    /// TermArg := ExpressionOpcode | DataObject | ArgObj | LocalObj (20.2.5): parsed, not kept.
    fn term_arg(&mut self, c: &mut Cur<'_>, scope: &[Seg], d: u32) -> R<()> {
        if d > MAX_DEPTH {
            return Err(PErr::Depth);
        }
        let d = d + 1;
        let op = c.peek()?;
        match op {
            0x00 | 0x01 | 0xFF | 0x60..=0x6E => c.pos += 1,
            0x0A | 0x0B | 0x0C | 0x0E => {
                c.pos += 1;
                c.take(match op {
                    0x0A => 1,
                    0x0B => 2,
                    0x0C => 4,
                    _ => 8,
                })?;
            }
            0x0D => {
                c.pos += 1;
                string(c)?;
            }
            0x11..=0x13 => {
                c.pos += 1;
                c.pkg()?;
            }
            b'\\' | b'^' | 0x2E | 0x2F | b'A'..=b'Z' | b'_' => {
                // MethodInvocation := NameString TermArgList, or a plain name reference.
                let n = name_string(c)?;
                if let Some(argc) = self.method_args(scope, &n) {
                    for _ in 0..argc {
                        self.term_arg(c, scope, d)?;
                    }
                }
            }
            0x5B => {
                let ext = c.peek_at(1).ok_or(PErr::Eof)?;
                let sig = ext_signature(ext).ok_or(PErr::Opcode(0x5B, Some(ext)))?;
                c.pos += 2;
                self.operands(c, scope, d, sig)?;
            }
            _ => {
                let sig = signature(op).ok_or(PErr::Opcode(op, None))?;
                c.pos += 1;
                self.operands(c, scope, d, sig)?;
            }
        }
        Ok(())
    }

    fn operands(&mut self, c: &mut Cur<'_>, scope: &[Seg], d: u32, sig: &[A]) -> R<()> {
        for a in sig {
            match a {
                T => self.term_arg(c, scope, d)?,
                S | R => self.super_name(c, scope, d)?,
                N => {
                    name_string(c)?;
                }
                B => {
                    c.take(1)?;
                }
                W => {
                    c.take(2)?;
                }
                D => {
                    c.take(4)?;
                }
            }
        }
        Ok(())
    }

    /// SuperName / Target: a name here is never an invocation (ACPICA parses it as a path).
    fn super_name(&mut self, c: &mut Cur<'_>, scope: &[Seg], d: u32) -> R<()> {
        match c.peek()? {
            0x00 | 0x60..=0x6E => c.pos += 1,
            0x5B if c.peek_at(1) == Some(0x31) => c.pos += 2, // Debug
            b'\\' | b'^' | 0x2E | 0x2F | b'A'..=b'Z' | b'_' => {
                name_string(c)?;
            }
            _ => self.term_arg(c, scope, d)?,
        }
        Ok(())
    }
}

/// String := StringPrefix AsciiCharList NullChar (prefix already consumed).
fn string(c: &mut Cur<'_>) -> R<()> {
    while c.byte().map_err(|_| PErr::Unterminated)? != 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wrap AML in a definition block header with a correct checksum.
    pub(crate) fn table(sig: &[u8; 4], aml: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t[8] = 2;
        t.extend_from_slice(aml);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    /// PkgLength-prefix `body` (the length includes the PkgLength bytes).
    fn pkg(body: &[u8]) -> Vec<u8> {
        let n = body.len();
        let mut v = if n + 1 < 0x40 {
            vec![(n + 1) as u8]
        } else if n + 2 < 0x1000 {
            let l = n + 2;
            vec![0x40 | (l & 0xF) as u8, (l >> 4) as u8]
        } else {
            let l = n + 3;
            vec![0x80 | (l & 0xF) as u8, (l >> 4) as u8, (l >> 12) as u8]
        };
        v.extend_from_slice(body);
        v
    }

    fn op_pkg(op: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = op.to_vec();
        v.extend(pkg(body));
        v
    }

    /// Name(NAME, Package(n){elements...}) with raw element bytes.
    fn name_pkg(name: &[u8], count: u8, elems: &[u8]) -> Vec<u8> {
        let mut body = vec![count];
        body.extend_from_slice(elems);
        let mut v = vec![0x08];
        v.extend_from_slice(name);
        v.extend(op_pkg(&[0x12], &body));
        v
    }

    fn run(tables: &[Vec<u8>]) -> SleepAnalysis {
        let names: Vec<String> = (0..tables.len()).map(|i| format!("t{i}")).collect();
        let raw: Vec<RawTable<'_>> = tables
            .iter()
            .zip(&names)
            .map(|(b, n)| RawTable { name: n, bytes: b })
            .collect();
        analyze(&raw, &mut Vec::new())
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn integer_encodings_and_package_sizes() {
        let aml = cat(&[
            &name_pkg(b"_S5_", 4, &[0x0A, 0x07, 0x00, 0x00, 0x00]),
            &name_pkg(b"_S4_", 2, &[0x0B, 0x06, 0x00, 0x01]),
            &name_pkg(b"_S3_", 1, &[0x0B, 0x05, 0x03]),
        ]);
        let a = run(&[table(b"DSDT", &aml)]);
        assert_eq!(a.state(5), SleepObject::Static([7, 0]));
        assert_eq!(a.state(4), SleepObject::Static([6, 1]));
        assert_eq!(
            a.state(3),
            SleepObject::Static([5, 3]),
            "1-element rule: low byte, next byte"
        );
        let aml = cat(&[
            &name_pkg(b"_S5_", 2, &[0xFF, 0x0C, 0x02, 0, 0, 0]),
            &name_pkg(b"_S4_", 2, &[0x0E, 4, 0, 0, 0, 0, 0, 0, 0, 0x01]),
        ]);
        let a = run(&[table(b"DSDT", &aml)]);
        assert_eq!(a.state(5), SleepObject::Static([0xFF, 2]));
        assert_eq!(a.state(4), SleepObject::Static([4, 1]));
        assert_eq!(a.state(3), SleepObject::Absent);
    }

    #[test]
    fn scopes_and_paths() {
        // Scope(\_SB) { Name(_S5, ...) } is \_SB._S5_, not \_S5_.
        let sb = op_pkg(
            &[0x10],
            &cat(&[b"_SB_", &name_pkg(b"_S5_", 2, &[0x0A, 1, 0x0A, 1])]),
        );
        let a = run(&[table(b"DSDT", &sb)]);
        assert_eq!(a.state(5), SleepObject::Absent);
        // Scope(\) { ... }, Name(\_S4, ...) inside a Device, and ^ from \_SB.
        let root = op_pkg(
            &[0x10],
            &cat(&[b"\\\0", &name_pkg(b"_S5_", 2, &[0x0A, 2, 0x0A, 2])]),
        );
        let dev = op_pkg(
            &[0x5B, 0x82],
            &cat(&[b"DEV0", &name_pkg(b"\\_S4_", 2, &[0x0A, 3, 0x0A, 3])]),
        );
        let up = op_pkg(
            &[0x10],
            &cat(&[b"_SB_", &name_pkg(b"^_S3_", 2, &[0x0A, 4, 0x00])]),
        );
        let a = run(&[table(b"DSDT", &cat(&[&root, &dev, &up]))]);
        assert_eq!(a.state(5), SleepObject::Static([2, 2]));
        assert_eq!(a.state(4), SleepObject::Static([3, 3]));
        assert_eq!(a.state(3), SleepObject::Static([4, 0]));
        // Dual-name path \_SB.XXXX is not root; multi-name with one segment is.
        let dual = name_pkg(b"\\\x2E_SB__S5_", 2, &[0x01, 0x01]);
        let multi = name_pkg(b"\\\x2F\x01_S4_", 2, &[0x01, 0x00]);
        let a = run(&[table(b"SSDT", &cat(&[&dual, &multi]))]);
        assert_eq!(a.state(5), SleepObject::Absent);
        assert_eq!(a.state(4), SleepObject::Static([1, 0]));
    }

    #[test]
    fn dynamic_cases() {
        // If (SS3) { Name(_S3, ...) }   Method(_S4) { Return(...) }   Name(_S5, Package(){ FOO, 0 })
        let iff = op_pkg(
            &[0xA0],
            &cat(&[b"SS3_", &name_pkg(b"_S3_", 2, &[0x0A, 5, 0x00])]),
        );
        let method = op_pkg(&[0x14], &cat(&[b"_S4_", &[0x00], &[0xA4, 0x01]]));
        let s5 = name_pkg(b"_S5_", 2, &cat(&[b"FOO_", &[0x00]]));
        let a = run(&[table(b"DSDT", &cat(&[&iff, &method, &s5]))]);
        assert!(
            matches!(a.state(3), SleepObject::Dynamic(_)),
            "{:?}",
            a.state(3)
        );
        assert!(matches!(a.state(4), SleepObject::Dynamic(_)));
        assert!(matches!(a.state(5), SleepObject::Dynamic(_)));
        assert_eq!(serde_json::to_string(&a.state(3)).unwrap(), "\"dynamic\"");
        // Else and While count too, nested in a Scope.
        let els = op_pkg(&[0xA1], &name_pkg(b"\\_S3_", 2, &[0x01, 0x01]));
        let iff = op_pkg(&[0xA0], &[0x01]);
        let wh = op_pkg(
            &[0xA2],
            &cat(&[&[0x00], &name_pkg(b"\\_S4_", 2, &[0x01, 0x01])]),
        );
        let a = run(&[table(
            b"DSDT",
            &op_pkg(&[0x10], &cat(&[b"_SB_", &iff, &els, &wh])),
        )]);
        assert!(matches!(a.state(3), SleepObject::Dynamic(_)));
        assert!(matches!(a.state(4), SleepObject::Dynamic(_)));
        // A method body creating \_S5 makes an absent object dynamic.
        let m = op_pkg(
            &[0x14],
            &cat(&[b"FOO_", &[0x00], &name_pkg(b"\\_S5_", 2, &[0x01, 0x01])]),
        );
        assert!(matches!(
            run(&[table(b"DSDT", &m)]).state(5),
            SleepObject::Dynamic(_)
        ));
    }

    #[test]
    fn first_definition_in_load_order_decides() {
        let d = table(b"DSDT", &name_pkg(b"_S5_", 2, &[0x0A, 2, 0x0A, 2]));
        let s = table(b"SSDT", &name_pkg(b"_S5_", 2, &[0x0A, 7, 0x0A, 7]));
        assert_eq!(
            run(&[d.clone(), s.clone()]).state(5),
            SleepObject::Static([2, 2])
        );
        // Found only in an SSDT.
        let e = table(b"DSDT", &[]);
        assert_eq!(run(&[e, s]).state(5), SleepObject::Static([7, 7]));
    }

    #[test]
    fn invalid_values() {
        let aml = cat(&[
            &name_pkg(b"_S5_", 0, &[]),
            &name_pkg(b"_S4_", 2, &[0x0D, b'a', 0, 0x00]),
            &[0x08][..],
            b"_S3_",
            &[0x0A, 0x05],
        ]);
        let a = run(&[table(b"DSDT", &aml)]);
        assert!(matches!(a.state(5), SleepObject::Invalid(_)));
        assert!(matches!(a.state(4), SleepObject::Invalid(_)));
        assert!(matches!(a.state(3), SleepObject::Invalid(_)));
        assert_eq!(serde_json::to_string(&a.state(3)).unwrap(), "null");
        // Declared count smaller than the initializers: truncated; larger: the initializers.
        let aml = cat(&[
            &name_pkg(b"_S5_", 1, &[0x0A, 7, 0x0A, 9]),
            &name_pkg(b"_S4_", 4, &[0x0A, 6]),
        ]);
        let a = run(&[table(b"DSDT", &aml)]);
        assert_eq!(a.state(5), SleepObject::Static([7, 0]));
        assert_eq!(a.state(4), SleepObject::Static([6, 0]));
    }

    #[test]
    fn method_invocations_use_argument_counts() {
        // Method(\M2, 2) defined in a later table; If (M2(One, Ones)) { Name(\_S3, ...) } must
        // parse the two arguments; a stray "_S5_" byte pattern inside a buffer must not count.
        let m2 = table(
            b"SSDT",
            &op_pkg(&[0x14], &cat(&[b"\\M2__", &[0x02], &[0xA4, 0x00]])[..]),
        );
        let iff = op_pkg(
            &[0xA0],
            &cat(&[b"M2__", &[0x01, 0xFF], &name_pkg(b"_S3_", 2, &[0x01, 0x00])]),
        );
        let hidden = name_pkg(b"_S5_", 2, &[1, 1]);
        let buf = op_pkg(
            &[0x08, b'B', b'U', b'F', b'0', 0x11],
            &cat(&[&[0x0A, hidden.len() as u8], &hidden]),
        );
        let s4 = name_pkg(b"_S4_", 2, &[0x0A, 6, 0x0A, 6]);
        let a = run(&[table(b"DSDT", &cat(&[&iff, &buf, &s4])), m2]);
        assert_eq!(a.error_count, 0, "{:?}", a.errors);
        assert!(matches!(a.state(3), SleepObject::Dynamic(_)));
        assert_eq!(a.state(5), SleepObject::Absent);
        assert_eq!(a.state(4), SleepObject::Static([6, 6]));
    }

    #[test]
    fn fields_and_named_objects_are_skipped() {
        let region = cat(&[
            &[0x5B, 0x80],
            b"PMIO",
            &[0x01, 0x0B, 0x00, 0x04, 0x0A, 0x80],
        ]);
        let field = op_pkg(
            &[0x5B, 0x81],
            &cat(&[
                b"PMIO",
                &[0x01],
                &[0x00, 0x10],
                b"SS3_",
                &[0x01],
                &[0x01, 0x00, 0x00],
            ]),
        );
        let proc_ = op_pkg(&[0x5B, 0x83], &cat(&[b"CPU0", &[0, 0x10, 0x04, 0, 0, 6]]));
        let pr = op_pkg(
            &[0x5B, 0x84],
            &cat(&[b"PRS0", &[0, 0, 0], &name_pkg(b"\\_S4_", 2, &[1, 1])]),
        );
        let tz = op_pkg(&[0x5B, 0x85], b"TZ00");
        let mutex = cat(&[&[0x5B, 0x01], b"MUT0", &[0x00]]);
        let ext = cat(&[&[0x15, b'\\', 0x2E], b"_SB_XYZ_", &[0x08, 0x01]]);
        let s5 = name_pkg(b"_S5_", 4, &[0x0A, 7, 0, 0, 0]);
        let a = run(&[table(
            b"DSDT",
            &cat(&[&region, &field, &proc_, &pr, &tz, &mutex, &ext, &s5]),
        )]);
        assert_eq!(a.error_count, 0, "{:?}", a.errors);
        assert_eq!(a.state(5), SleepObject::Static([7, 0]));
        assert_eq!(a.state(4), SleepObject::Static([1, 1]));
    }

    #[test]
    fn long_paths_are_refused() {
        // Scope(\A.A.A...(70 segments)) { Name(_S5, ...) } and a 65-segment root name.
        let mut name = vec![b'\\', 0x2F, 70];
        for _ in 0..70 {
            name.extend_from_slice(b"AAAA");
        }
        let scope = op_pkg(&[0x10], &cat(&[&name, &name_pkg(b"\\_S4_", 2, &[1, 1])]));
        let mut long = vec![b'\\', 0x2F, 65];
        for _ in 0..64 {
            long.extend_from_slice(b"BBBB");
        }
        long.extend_from_slice(b"_S5_");
        let n = cat(&[&[0x08], &long, &[0x01]]);
        let a = run(&[table(b"DSDT", &cat(&[&scope, &n]))]);
        assert_eq!(a.error_count, 1, "{:?}", a.errors);
        assert!(a.errors[0].contains("segments"));
        assert_eq!(
            a.state(4),
            SleepObject::Absent,
            "the scope's contents are skipped"
        );
        assert_eq!(a.state(5), SleepObject::Absent);
    }

    #[test]
    fn errors_are_contained_and_bounded() {
        // Garbage inside a Device ends only that Device.
        let dev = op_pkg(&[0x5B, 0x82], &cat(&[b"DEV0", &[0xF0, 0xF1, 0xF2]]));
        let s5 = name_pkg(b"_S5_", 2, &[0x0A, 5, 0x0A, 5]);
        let a = run(&[table(b"DSDT", &cat(&[&dev, &s5]))]);
        assert_eq!(a.error_count, 1);
        assert_eq!(a.state(5), SleepObject::Static([5, 5]));
        // Deep nesting hits the depth limit, not the stack.
        let mut aml = Vec::new();
        for _ in 0..10_000 {
            aml.extend_from_slice(&[0x92]); // LNot LNot LNot ...
        }
        let a = run(&[table(b"DSDT", &aml)]);
        assert!(a.errors[0].contains("deeper"), "{:?}", a.errors);
        // Truncated inputs of every length never panic.
        let full = table(b"DSDT", &cat(&[&dev, &s5]));
        for n in 0..full.len() {
            let _ = run(&[full[..n].to_vec()]);
        }
    }
}
