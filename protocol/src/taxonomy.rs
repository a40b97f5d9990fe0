//! The two-level need-tag tree (科普需求标签): 8 groups, 98 tags.
//!
//! This module owns the tag list of `research/domain.md` §2: each tag's id (`liv.asf`), its
//! Chinese name (the L2 text), a short plain-words phrasing a cadre can read aloud, its L1
//! [`Group`] and its [`TagFlag`]:
//!
//! - [`TagFlag::Household`]: may be asked of a household (a stated need) and derived from
//!   household fields by [`crate::triggers::derive_tags`];
//! - [`TagFlag::Region`]: set from the area code (geography, or topics that would stigmatise a
//!   household); never asked, never derived from a household;
//! - [`TagFlag::Voluntary`]: sensitive opt-in; comes only from the private document with separate
//!   consent ([`crate::triggers::derive_private_tags`]).
//!
//! A [`Tag`] is a plain `Copy` enum; it orders by its position in the tree (group, then the order
//! of the table) and serialises as its id string.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An L1 group of the tag tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// 种植 — crops.
    Plt,
    /// 畜牧水产 — livestock and aquaculture.
    Liv,
    /// 健康 — health.
    Hlt,
    /// 安全 — safety.
    Saf,
    /// 生态人居 — environment and living conditions.
    Eco,
    /// 数字与经营 — digital skills and business.
    Dig,
    /// 政策 — policy.
    Pol,
    /// 科学素质 — scientific literacy.
    Sci,
}

impl Group {
    /// Every group, in tree order.
    pub const ALL: [Group; 8] = [
        Group::Plt,
        Group::Liv,
        Group::Hlt,
        Group::Saf,
        Group::Eco,
        Group::Dig,
        Group::Pol,
        Group::Sci,
    ];

    /// The group id, which is also the prefix of its tags' ids (`liv`).
    pub const fn id(self) -> &'static str {
        match self {
            Group::Plt => "plt",
            Group::Liv => "liv",
            Group::Hlt => "hlt",
            Group::Saf => "saf",
            Group::Eco => "eco",
            Group::Dig => "dig",
            Group::Pol => "pol",
            Group::Sci => "sci",
        }
    }

    /// The group's Chinese name (`畜牧水产`).
    pub const fn zh_name(self) -> &'static str {
        match self {
            Group::Plt => "种植",
            Group::Liv => "畜牧水产",
            Group::Hlt => "健康",
            Group::Saf => "安全",
            Group::Eco => "生态人居",
            Group::Dig => "数字与经营",
            Group::Pol => "政策",
            Group::Sci => "科学素质",
        }
    }

    /// The group with this id.
    pub fn parse(id: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.id() == id)
    }

    /// The tags of this group, in tree order.
    pub fn tags(self) -> impl Iterator<Item = Tag> {
        Tag::all().filter(move |t| t.group() == self)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Group {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// Where a tag may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagFlag {
    /// Askable of a household and derivable from its profile.
    Household,
    /// Region-level (R): set from the area code, never asked of a household.
    Region,
    /// Voluntary (V): sensitive opt-in, only from the private document with separate consent.
    Voluntary,
}

impl TagFlag {
    /// Chinese name of the flag, as shown to operators.
    pub const fn zh_name(self) -> &'static str {
        match self {
            TagFlag::Household => "农户标签",
            TagFlag::Region => "地区标签",
            TagFlag::Voluntary => "自愿敏感标签",
        }
    }
}

/// Everything known about one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagDef {
    /// Stable id, `<group>.<name>`, e.g. `liv.asf`.
    pub id: &'static str,
    /// Chinese name: the L2 text of the tree, e.g. `非洲猪瘟防控与生物安全`.
    pub zh_name: &'static str,
    /// A short phrasing a cadre can read aloud, e.g. `防非洲猪瘟`.
    pub plain_words: &'static str,
    /// The L1 group.
    pub group: Group,
    /// Where the tag may come from.
    pub flag: TagFlag,
}

macro_rules! tag_tree {
    ($( $variant:ident => $id:literal, $group:ident, $flag:ident, $zh:literal, $plain:literal; )*) => {
        /// A need tag of the tree. `Copy`; ordered by position in the tree; serialised as its id.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Tag {
            $( #[doc = $zh] $variant, )*
        }

        impl Tag {
            /// Every tag, in tree order.
            pub const ALL: &'static [Tag] = &[ $( Tag::$variant, )* ];

            /// Everything known about this tag.
            pub const fn def(self) -> &'static TagDef {
                match self {
                    $( Tag::$variant => &TagDef {
                        id: $id,
                        zh_name: $zh,
                        plain_words: $plain,
                        group: Group::$group,
                        flag: TagFlag::$flag,
                    }, )*
                }
            }
        }
    };
}

tag_tree! {
    PltRice => "plt.rice", Plt, Household, "水稻栽培与病虫害(稻瘟病/二化螟/稻飞虱)", "种水稻、防稻田病虫";
    PltMaize => "plt.maize", Plt, Household, "玉米栽培与病虫害(草地贪夜蛾)", "种玉米、防草地贪夜蛾";
    PltSoystrip => "plt.soystrip", Plt, Household, "玉米大豆带状复合种植", "玉米和大豆间着种";
    PltWheat => "plt.wheat", Plt, Household, "小麦(条锈病/赤霉病)", "种小麦、防锈病";
    PltRape => "plt.rape", Plt, Household, "油菜(菌核病)", "种油菜、防菌核病";
    PltPotato => "plt.potato", Plt, Household, "马铃薯/薯类(晚疫病)", "种洋芋红苕、防晚疫病";
    PltHighland => "plt.highland", Plt, Household, "青稞与高原作物", "种青稞等高原庄稼";
    PltVeg => "plt.veg", Plt, Household, "露地蔬菜", "种菜的技术";
    PltGreenhouse => "plt.greenhouse", Plt, Household, "设施农业/大棚", "大棚种植";
    PltCitrus => "plt.citrus", Plt, Household, "柑橘/柚/柠檬(红蜘蛛、大实蝇、溃疡病、木虱)", "柑橘柚子柠檬防病虫";
    PltKiwi => "plt.kiwi", Plt, Household, "猕猴桃(溃疡病、授粉)", "猕猴桃防溃疡病、授粉";
    PltTea => "plt.tea", Plt, Household, "茶叶(小绿叶蝉、茶饼病、春茶采制)", "茶园管理和采茶制茶";
    PltPepper => "plt.pepper", Plt, Household, "花椒(蚜虫、锈病、流胶病、天牛)", "花椒防病虫";
    PltFruit => "plt.fruit", Plt, Household, "其他果树(李桃梨芒果石榴枇杷)", "李子桃子梨等果树管理";
    PltHerb => "plt.herb", Plt, Household, "中药材", "种中药材";
    PltFungi => "plt.fungi", Plt, Household, "食用菌", "种蘑菇木耳";
    PltForest => "plt.forest", Plt, Household, "林下经济与竹", "林下种养和竹子";
    PltPesticide => "plt.pesticide", Plt, Household, "农药科学安全使用(禁限用)", "农药怎么用才安全";
    PltFertilizer => "plt.fertilizer", Plt, Household, "测土配方/有机肥替代", "科学施肥";
    PltSeed => "plt.seed", Plt, Household, "良种选用与假劣农资识别", "选好种子、认出假农资";
    PltMachinery => "plt.machinery", Plt, Household, "农机使用与安全", "农机怎么用才安全";
    PltDrought => "plt.drought", Plt, Region, "抗旱节水与防冻", "防旱防冻";

    LivPig => "liv.pig", Liv, Household, "生猪科学养殖", "科学养猪";
    LivAsf => "liv.asf", Liv, Household, "非洲猪瘟防控与生物安全", "防非洲猪瘟";
    LivCattle => "liv.cattle", Liv, Household, "肉牛/奶牛", "养牛";
    LivYak => "liv.yak", Liv, Household, "牦牛与高原放牧", "养牦牛和放牧";
    LivSheep => "liv.sheep", Liv, Household, "山羊/绵羊(小反刍兽疫)", "养羊、防羊瘟";
    LivPoultry => "liv.poultry", Liv, Household, "家禽(禽流感)", "养鸡鸭鹅、防禽流感";
    LivRabbit => "liv.rabbit", Liv, Household, "兔", "养兔";
    LivBee => "liv.bee", Liv, Household, "蜜蜂", "养蜂";
    LivFish => "liv.fish", Liv, Household, "水产/稻渔综合种养", "养鱼和稻田养鱼";
    LivVaccine => "liv.vaccine", Liv, Household, "强制免疫(春防秋防)", "牲畜打防疫针";
    LivZoonosis => "liv.zoonosis", Liv, Household, "人畜共患病(布病/包虫病)", "防人和牲畜都会得的病";
    LivFeed => "liv.feed", Liv, Household, "饲草料与青贮", "种草和做青贮饲料";
    LivManure => "liv.manure", Liv, Household, "粪污利用与病死畜无害化", "粪便利用和病死畜处理";
    LivDrug => "liv.drug", Liv, Household, "兽药合理使用与休药期", "兽药怎么用才对";

    HltBp => "hlt.bp", Hlt, Household, "高血压防治", "防治高血压";
    HltDm => "hlt.dm", Hlt, Household, "糖尿病防治", "防治糖尿病";
    HltStroke => "hlt.stroke", Hlt, Household, "卒中/心梗识别与急救", "认出中风心梗、会急救";
    HltElderly => "hlt.elderly", Hlt, Household, "老年健康(防跌倒、认知、用药)", "老年人防跌倒、保健康";
    HltAlone => "hlt.alone", Hlt, Household, "留守/独居老人照护与安全", "照顾留守独居老人";
    HltMaternal => "hlt.maternal", Hlt, Voluntary, "孕产期保健", "怀孕和坐月子保健";
    HltInfant => "hlt.infant", Hlt, Household, "婴幼儿养育与预防接种", "养小娃娃、打预防针";
    HltChild => "hlt.child", Hlt, Household, "学龄儿童近视/营养/口腔", "娃娃护眼、营养和牙齿";
    HltLeftchild => "hlt.leftchild", Hlt, Household, "留守儿童心理与安全", "留守娃娃的心理和安全";
    HltNutrition => "hlt.nutrition", Hlt, Household, "合理膳食/减盐减油/腌腊", "吃得健康、少盐少油";
    HltInfect => "hlt.infect", Hlt, Region, "传染病防控(流感/结核/艾滋病)", "防传染病";
    HltEndemic => "hlt.endemic", Hlt, Region, "地方病/寄生虫病(包虫病等)", "防包虫病等地方病";
    HltMedicine => "hlt.medicine", Hlt, Household, "合理用药与家庭医生签约", "安全用药、签家庭医生";
    HltMental => "hlt.mental", Hlt, Voluntary, "心理健康", "心里不舒服怎么办";
    HltDisability => "hlt.disability", Hlt, Voluntary, "残疾预防与康复", "残疾预防和康复";
    HltTobacco => "hlt.tobacco", Hlt, Household, "控烟限酒", "少抽烟、少喝酒";
    HltFirstaid => "hlt.firstaid", Hlt, Household, "家庭急救常识", "家里急救常识";

    SafFraud => "saf.fraud", Saf, Household, "防电信网络诈骗", "防电话和网上诈骗";
    SafFraudOld => "saf.fraud_old", Saf, Household, "防养老/保健品诈骗", "防骗老年人的保健品骗局";
    SafQuake => "saf.quake", Saf, Region, "地震避险自救", "地震时怎么躲、怎么自救";
    SafGeo => "saf.geo", Saf, Household, "滑坡泥石流崩塌避险", "防滑坡泥石流";
    SafFlood => "saf.flood", Saf, Household, "山洪洪涝", "防山洪";
    SafFireWild => "saf.fire_wild", Saf, Household, "森林草原防火", "山林防火";
    SafFireHome => "saf.fire_home", Saf, Household, "家庭用火用电", "家里用火用电安全";
    SafCo => "saf.co", Saf, Household, "一氧化碳中毒防范", "烤火防煤气中毒";
    SafDrown => "saf.drown", Saf, Household, "防溺水", "娃娃防溺水";
    SafMushroom => "saf.mushroom", Saf, Household, "野生菌中毒防范", "吃野生菌防中毒";
    SafFood => "saf.food", Saf, Household, "食品安全", "吃的东西要安全";
    SafPestPoison => "saf.pest_poison", Saf, Household, "农药存放与中毒急救", "农药放好、防误服中毒";
    SafTraffic => "saf.traffic", Saf, Household, "农村交通(摩托/三轮)", "骑摩托开三轮要安全";
    SafLightning => "saf.lightning", Saf, Region, "防雷电", "防雷击";
    SafDog => "saf.dog", Saf, Household, "犬只管理与狂犬病", "管好狗、防狂犬病";

    EcoWater => "eco.water", Eco, Household, "饮水安全(井泉水消毒、水窖)", "喝的水要干净";
    EcoToilet => "eco.toilet", Eco, Household, "卫生厕所使用与维护", "厕所用好管好";
    EcoWaste => "eco.waste", Eco, Household, "垃圾分类与村容", "垃圾分类、村子干净";
    EcoSewage => "eco.sewage", Eco, Household, "生活污水", "生活污水怎么处理";
    EcoStraw => "eco.straw", Eco, Household, "秸秆利用与禁烧", "秸秆利用、不烧秸秆";
    EcoFilm => "eco.film", Eco, Household, "农膜与农药包装回收", "农膜和农药瓶回收";
    EcoEnergy => "eco.energy", Eco, Household, "清洁能源(沼气/电代柴)", "用沼气、用电代替烧柴";
    EcoGrass => "eco.grass", Eco, Region, "草原保护与草畜平衡", "保护草原";
    EcoWildlife => "eco.wildlife", Eco, Region, "野生动物保护/长江禁渔", "保护野生动物、长江禁渔";

    DigPhone => "dig.phone", Dig, Household, "智能手机基础(适老)", "学用智能手机";
    DigPay => "dig.pay", Dig, Household, "移动支付与账户安全", "手机付款和账户安全";
    DigGov => "dig.gov", Dig, Household, "线上政务/医保电子凭证", "手机上办事、用医保码";
    DigEcom => "dig.ecom", Dig, Household, "农村电商与直播", "网上卖农产品、直播";
    DigMarket => "dig.market", Dig, Household, "市场信息/品牌/认证", "行情、品牌和认证";
    DigCoop => "dig.coop", Dig, Household, "合作社与家庭农场", "合作社和家庭农场";
    DigFinance => "dig.finance", Dig, Household, "农业保险与农村金融", "农业保险和贷款";
    DigJob => "dig.job", Dig, Household, "务工技能与返乡创业", "打工技能和回乡创业";
    DigTour => "dig.tour", Dig, Household, "乡村旅游/农家乐", "办农家乐、乡村旅游";

    PolFarm => "pol.farm", Pol, Household, "强农惠农补贴", "种地有哪些补贴";
    PolLand => "pol.land", Pol, Household, "土地承包与流转", "土地承包和流转";
    PolIns => "pol.ins", Pol, Household, "城乡居民医保与养老保险", "医保和养老保险";
    PolAid => "pol.aid", Pol, Voluntary, "防返贫监测与救助", "防返贫和救助";
    PolEdu => "pol.edu", Pol, Household, "教育资助/控辍保学", "娃娃读书有资助";
    PolHouse => "pol.house", Pol, Household, "农房安全与改造", "农房安全和改造";
    PolLaw => "pol.law", Pol, Household, "普法/移风易俗", "学法用法、移风易俗";
    PolEcocomp => "pol.ecocomp", Pol, Region, "生态补偿/草原奖补", "生态补偿和草原奖补";

    SciWeather => "sci.weather", Sci, Household, "天气与农业气象", "看天气、安排农事";
    SciRumor => "sci.rumor", Sci, Household, "科学辟谣/破除迷信", "辨谣言、破迷信";
    SciYouth => "sci.youth", Sci, Household, "青少年科学兴趣", "娃娃学科学";
    SciFrontier => "sci.frontier", Sci, Household, "前沿科技与科学家精神", "新科技和科学家故事";
}

/// Number of tags in the tree.
pub const TAG_COUNT: usize = 98;

impl Tag {
    /// Every tag, in tree order.
    pub fn all() -> impl Iterator<Item = Tag> + Clone {
        Tag::ALL.iter().copied()
    }

    /// The tag with this id (`"liv.asf"`), if any. Ids are case-sensitive.
    pub fn parse(id: &str) -> Option<Tag> {
        Tag::all().find(|t| t.id() == id)
    }

    /// Stable id, e.g. `liv.asf`.
    pub const fn id(self) -> &'static str {
        self.def().id
    }

    /// Chinese name (the L2 text), e.g. `非洲猪瘟防控与生物安全`.
    pub const fn zh_name(self) -> &'static str {
        self.def().zh_name
    }

    /// A short phrasing a cadre can read aloud, e.g. `防非洲猪瘟`.
    pub const fn plain_words(self) -> &'static str {
        self.def().plain_words
    }

    /// The L1 group.
    pub const fn group(self) -> Group {
        self.def().group
    }

    /// Where the tag may come from.
    pub const fn flag(self) -> TagFlag {
        self.def().flag
    }

    /// Whether a household may be asked about this tag (stated needs); only
    /// [`TagFlag::Household`] tags are.
    pub const fn is_askable(self) -> bool {
        matches!(self.flag(), TagFlag::Household)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.id())
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Tag::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("未知的需求标签“{s}” (unknown need tag {s:?})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn has_98_unique_tags() {
        assert_eq!(Tag::ALL.len(), TAG_COUNT);
        let ids: BTreeSet<&str> = Tag::all().map(Tag::id).collect();
        assert_eq!(ids.len(), TAG_COUNT, "duplicate tag ids");
        let names: BTreeSet<&str> = Tag::all().map(Tag::zh_name).collect();
        assert_eq!(names.len(), TAG_COUNT, "duplicate tag names");
    }

    #[test]
    fn id_prefix_is_group_and_ids_are_well_formed() {
        for t in Tag::all() {
            let (prefix, name) = t.id().split_once('.').expect("id has a dot");
            assert_eq!(prefix, t.group().id(), "{t:?}");
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{t:?}"
            );
            assert!(!t.plain_words().is_empty() && t.plain_words().chars().count() <= 16);
        }
    }

    #[test]
    fn group_sizes_follow_the_tree() {
        let sizes: Vec<usize> = Group::ALL.iter().map(|g| g.tags().count()).collect();
        assert_eq!(sizes, vec![22, 14, 17, 15, 9, 9, 8, 4]);
        // Tags are listed group by group, so tree order is group order.
        let groups: Vec<Group> = Tag::all().map(Tag::group).collect();
        let mut sorted = groups.clone();
        sorted.sort();
        assert_eq!(groups, sorted);
    }

    #[test]
    fn flags_match_the_table() {
        let region: Vec<&str> = Tag::all()
            .filter(|t| t.flag() == TagFlag::Region)
            .map(Tag::id)
            .collect();
        assert_eq!(
            region,
            vec![
                "plt.drought",
                "hlt.infect",
                "hlt.endemic",
                "saf.quake",
                "saf.lightning",
                "eco.grass",
                "eco.wildlife",
                "pol.ecocomp"
            ]
        );
        let voluntary: Vec<&str> = Tag::all()
            .filter(|t| t.flag() == TagFlag::Voluntary)
            .map(Tag::id)
            .collect();
        assert_eq!(
            voluntary,
            vec!["hlt.maternal", "hlt.mental", "hlt.disability", "pol.aid"]
        );
        assert!(Tag::LivAsf.is_askable());
        assert!(!Tag::SafQuake.is_askable());
    }

    #[test]
    fn parse_and_serde_use_the_id() {
        for t in Tag::all() {
            assert_eq!(Tag::parse(t.id()), Some(t));
        }
        assert_eq!(Tag::parse("LIV.ASF"), None);
        assert_eq!(Tag::parse("liv"), None);
        assert_eq!(Tag::LivAsf.zh_name(), "非洲猪瘟防控与生物安全");
        let json = serde_json::to_string(&Tag::LivAsf).expect("serialise");
        assert_eq!(json, "\"liv.asf\"");
        let back: Tag = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, Tag::LivAsf);
        assert!(serde_json::from_str::<Tag>("\"liv.nope\"").is_err());
        assert_eq!(Group::parse("eco"), Some(Group::Eco));
        assert_eq!(Group::Liv.zh_name(), "畜牧水产");
    }
}
