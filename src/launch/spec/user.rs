//! The container's user and groups, resolved against the image's /etc/passwd and /etc/group
//! (`-u`, the image's User, `--group-add`).

use std::collections::BTreeSet;

use super::SpecError;

/// A resolved container user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids (the primary one included, as `id` shows it).
    pub groups: Vec<u32>,
    /// Home directory, for HOME.
    pub home: String,
}

/// One line of /etc/passwd.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or("/"),
        })
    })
}

/// (name, gid, members) of each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse().ok()?,
            f.get(3)
                .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                .unwrap_or_default(),
        ))
    })
}

/// Resolves `-u`/the image's User against the image's /etc/passwd and /etc/group contents.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<User, SpecError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd_entries(passwd).find(|e| e.name == user || e.uid.to_string() == user);
    let (uid, mut gid, home, name) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_owned(), Some(e.name.to_owned())),
        (None, Ok(uid)) => (uid, 0, "/".to_owned(), None),
        (None, Err(_)) => return Err(SpecError::UnknownUser(user.to_owned())),
    };
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = match group_entries(group).find(|(n, id, _)| *n == g || id.to_string() == g) {
            Some((_, id, _)) => id,
            None => g
                .parse()
                .map_err(|_| SpecError::UnknownGroup(g.to_owned()))?,
        };
    }
    let mut groups = BTreeSet::from([gid]);
    // Supplementary groups come from membership, unless a group was forced with user:group.
    if grp.is_none()
        && let Some(name) = &name
    {
        groups.extend(
            group_entries(group)
                .filter(|(_, _, members)| members.iter().any(|m| m == name))
                .map(|(_, id, _)| id),
        );
    }
    Ok(User {
        uid,
        gid,
        groups: groups.into_iter().collect(),
        home,
    })
}

/// `--group-add` groups as gids: a number as it is, a name from the image's /etc/group.
pub fn group_add(groups: &[String], group_file: &str) -> Result<Vec<u32>, SpecError> {
    groups
        .iter()
        .map(
            |g| match group_entries(group_file).find(|(name, _, _)| name == g) {
                Some((_, gid, _)) => Ok(gid),
                None => g.parse().map_err(|_| SpecError::UnknownGroup(g.clone())),
            },
        )
        .collect()
}
