//! Who the device model becomes: the `--user` argument and its resolution to the per-guest
//! uid and gid (Xen's `dm_restrict` scheme by default).

use super::SandboxError;
use xen_abi::DomId;

/// The user whose uid plus the domid is the default per-guest uid, and whose gid is the
/// default gid: the name libxl uses for `dm_restrict` (Xen 4.17
/// tools/libs/light/libxl_internal.h:4795, `LIBXL_QEMU_USER_RANGE_BASE`; looked up at
/// tools/libs/light/libxl_dm.c:191, uid = its uid + domid at :201, gid = its gid at :220-221).
pub const RANGE_BASE_USER: &str = "xen-qemuuser-range-base";

/// Who the process becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    /// uid (real, effective, saved).
    pub uid: u32,
    /// gid (real, effective, saved); no supplementary groups.
    pub gid: u32,
}

/// The `--user` argument: `NAME` or `UID[:GID]`, or the default scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    /// `xen-qemuuser-range-base`'s uid + domid, its gid.
    RangeBase,
    /// A user name (its uid and primary gid); `:GID` may follow.
    Name(String, Option<u32>),
    /// A numeric uid; the gid is `GID`, else the uid's primary gid if it has a passwd entry,
    /// else equal to the uid.
    Numeric(u32, Option<u32>),
}

impl std::str::FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (u, g) = match s.split_once(':') {
            Some((u, g)) => (
                u,
                Some(
                    g.parse::<u32>()
                        .map_err(|_| format!("{s:?}: the GID after ':' must be a number"))?,
                ),
            ),
            None => (s, None),
        };
        if u.is_empty() {
            return Err("empty user".into());
        }
        Ok(match u.parse::<u32>() {
            Ok(uid) => UserSpec::Numeric(uid, g),
            Err(_) => UserSpec::Name(u.to_string(), g),
        })
    }
}

/// What the per-guest user resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Switch to these ids.
    Switch(Ids),
    /// Keep uid 0 (all capabilities are still dropped): only on the sim transport when the
    /// default scheme's user does not exist; the reason is logged.
    KeepRoot(String),
}

/// The base uid Xen's documentation suggests for [`RANGE_BASE_USER`]
/// (docs/features/qemu-deprivilege.pandoc:48-51 in Xen 4.17: "adduser --system --uid 131072
/// --group --no-create-home xen-qemuuser-range-base"; 2^17, with the 32752 uids after it free
/// for the domids).
pub const SUGGESTED_BASE_UID: u32 = 131072;

fn no_range_base_user() -> String {
    format!(
        "the per-guest user cannot be determined: user {RANGE_BASE_USER} does not exist and no --user was given. \
         Create it as Xen's dm_restrict expects (each guest's device models run as its uid + the domid, with its gid; \
         keep the {SUGGESTED_BASE_UID}..{SUGGESTED_BASE_UID}+32752 uids otherwise unused), e.g. \
         `adduser --system --uid {SUGGESTED_BASE_UID} --group --no-create-home {RANGE_BASE_USER}` \
         (or `groupadd -r -g {SUGGESTED_BASE_UID} {RANGE_BASE_USER} && useradd -r -M -u {SUGGESTED_BASE_UID} -g {SUGGESTED_BASE_UID} -d /nonexistent -s /usr/sbin/nologin {RANGE_BASE_USER}`), \
         or pass --user NAME|UID[:GID], or --no-sandbox"
    )
}

/// Resolve `spec` for guest `domid`. `sim` says whether the transport is xen-sim: there a
/// missing `xen-qemuuser-range-base` keeps uid 0 (with everything else of the sandbox) instead
/// of failing, so that a fresh machine runs the simulated guests; on Xen it is an error.
/// Reads the user database: call before the sandbox is applied (and before setup, so that a
/// bad `--user` changes nothing in Xen).
pub fn resolve_user(spec: &UserSpec, domid: DomId, sim: bool) -> Result<Identity, SandboxError> {
    use nix::unistd::{Uid, User};
    let lookup = |what: &str, r: nix::Result<Option<User>>| {
        r.map_err(|e| SandboxError::User(format!("looking up {what}: {e}")))
    };
    Ok(Identity::Switch(match spec {
        UserSpec::RangeBase => match lookup(RANGE_BASE_USER, User::from_name(RANGE_BASE_USER))? {
            Some(base) => {
                let uid = base
                    .uid
                    .as_raw()
                    .checked_add(u32::from(domid))
                    .ok_or_else(|| SandboxError::User("uid overflow".into()))?;
                // libxl refuses a uid that belongs to another user (libxl_dm.c:202-216).
                if let Some(other) =
                    lookup(&format!("uid {uid}"), User::from_uid(Uid::from_raw(uid)))?
                {
                    if other.name != RANGE_BASE_USER {
                        return Err(SandboxError::User(format!(
                            "wanted uid {uid} ({RANGE_BASE_USER} + {domid}) but that is user {}",
                            other.name
                        )));
                    }
                }
                Ids {
                    uid,
                    gid: base.gid.as_raw(),
                }
            }
            None if sim => return Ok(Identity::KeepRoot(no_range_base_user())),
            None => return Err(SandboxError::User(no_range_base_user())),
        },
        UserSpec::Name(n, g) => {
            let u = lookup(n, User::from_name(n))?.ok_or_else(|| {
                SandboxError::User(format!("--user {n}: no such user in the user database"))
            })?;
            Ids {
                uid: u.uid.as_raw(),
                gid: g.unwrap_or(u.gid.as_raw()),
            }
        }
        UserSpec::Numeric(uid, g) => {
            let gid = match g {
                Some(g) => *g,
                None => lookup(&format!("uid {uid}"), User::from_uid(Uid::from_raw(*uid)))?
                    .map(|u| u.gid.as_raw())
                    .unwrap_or(*uid),
            };
            Ids { uid: *uid, gid }
        }
    }))
}
