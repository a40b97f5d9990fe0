//! The demo's seed content library: generated science items with realistic Sichuan metadata.
//!
//! This module owns the generator: [`items`] returns a deterministic list of ~90 items (titles and
//! summaries in Chinese for tags of the taxonomy — 非洲猪瘟防控, 柑橘病虫害, 茶叶修剪, 猕猴桃溃疡病,
//! 花椒, 老年健康, 防诈骗, 电商, … — with months, regions, audience and a format among article,
//! image, audio and PDF), each with a small generated file ([`SeedItem::file`]: a Markdown
//! article, an SVG poster, a few-KB WAV, a one-page PDF). [`add_to`] writes the files and adds
//! every item through the hub's [`ContentLibrary::add`], so whatever file store the hub uses is
//! used. The same input always gives the same bytes, hence the same content ids.

use std::collections::BTreeMap;
use std::path::Path;

use cunyun_hub::library::{ContentLibrary, LibraryError};
use serde_json::{json, Value};

/// One generated item: its metadata (without `bytes`, which the library fills in) and its file.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedItem {
    /// File name of the main file (unique within the seed library).
    pub file_name: String,
    /// The metadata JSON, as an operator would give it to `content add`.
    pub meta: Value,
    /// The main file's bytes.
    pub file: Vec<u8>,
}

/// Why the seed library could not be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// A generated file could not be written.
    #[error("无法写入示例资源文件 {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The library refused an item.
    #[error("示例资源“{title}”无法加入资源库：{source}")]
    Library {
        /// The item's title.
        title: String,
        /// The library's error.
        source: LibraryError,
    },
}

/// A topic: a tag with three items of it (title, summary, format).
struct Topic {
    tags: &'static [&'static str],
    months: &'static [u8],
    regions: &'static [&'static str],
    audience: &'static [&'static str],
    source: &'static str,
    items: [(&'static str, &'static str, &'static str); 3],
}

const TOPICS: &[Topic] = &[
    Topic {
        tags: &["liv.asf", "liv.pig"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省农业农村厅",
        items: [
            (
                "非洲猪瘟防控十要点",
                "进出猪场消毒、不用泔水喂猪、发现病猪立即报告，做到早发现、早报告、早处置。",
                "article",
            ),
            (
                "养猪户生物安全挂图",
                "猪场入口消毒池、人员车辆管控、病死猪无害化处理一图看懂。",
                "image",
            ),
            (
                "非洲猪瘟防控广播稿",
                "村广播用，五分钟讲清非洲猪瘟怎么传播、怎么防。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["liv.pig"],
        months: &[],
        regions: &[],
        audience: &["age_18_59"],
        source: "四川农业大学",
        items: [
            (
                "生猪科学养殖：母猪产后护理",
                "产房温度、初乳吃足、仔猪补铁，降低仔猪死亡率。",
                "article",
            ),
            (
                "冬季猪舍保温与通风",
                "既要保温又要换气，防止氨气超标和呼吸道病。",
                "pdf",
            ),
            (
                "生猪饲料配比明白纸",
                "玉米、豆粕、麸皮怎么配，不同阶段喂多少。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["plt.citrus"],
        months: &[3, 4, 5],
        regions: &["5114", "5113", "5111"],
        audience: &[],
        source: "眉山市农业农村局",
        items: [
            (
                "柑橘红蜘蛛春季防治",
                "春梢期每叶2头以上即需防治，轮换用药，保护捕食螨。",
                "article",
            ),
            (
                "柑橘大实蝇识别与诱杀",
                "认准大实蝇成虫，悬挂诱捕器，及时捡拾落果深埋。",
                "image",
            ),
            (
                "柑橘溃疡病防控要点",
                "新梢期喷铜制剂，台风雨后及时补喷，剪除病枝集中烧毁。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["plt.citrus"],
        months: &[11, 12, 1],
        regions: &["5114"],
        audience: &[],
        source: "丹棱县农技推广中心",
        items: [
            (
                "不知火（丑柑）冬季防冻与挂果管理",
                "寒潮前灌水、树盘覆盖，套袋果注意防日灼和冻伤。",
                "article",
            ),
            (
                "柑橘采后清园与冬季修剪",
                "剪除枯枝病枝，喷石硫合剂，减少来年病虫基数。",
                "audio",
            ),
            (
                "柑橘木虱与黄龙病：冬季清园挂图",
                "发现黄龙病树立即挖除，统一防治木虱。",
                "image",
            ),
        ],
    },
    Topic {
        tags: &["plt.tea"],
        months: &[2, 3, 4],
        regions: &["5118", "5114", "5115"],
        audience: &[],
        source: "雅安市茶业发展中心",
        items: [
            (
                "春茶采摘标准与名优茶采制",
                "一芽一叶初展采，轻采轻放，当天采当天制。",
                "article",
            ),
            (
                "茶园小绿叶蝉绿色防控",
                "黄板诱杀、及时分批采摘，必要时选用低毒农药并守安全间隔期。",
                "image",
            ),
            (
                "茶叶采制工序讲解",
                "摊青、杀青、揉捻、干燥，每道工序的火候与手法。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["plt.tea"],
        months: &[5, 6, 10, 11],
        regions: &["5118", "5114"],
        audience: &[],
        source: "四川省农业科学院茶叶研究所",
        items: [
            (
                "茶树修剪：轻修剪与深修剪",
                "春茶后及时修剪，培养树冠，老茶园台刈更新。",
                "article",
            ),
            (
                "茶园秋冬管理与施基肥",
                "秋季深耕施有机肥，冬季封园，提高来年春茶产量。",
                "pdf",
            ),
            (
                "茶饼病识别与防治",
                "多雨季节注意茶饼病，及时摘除病叶。",
                "image",
            ),
        ],
    },
    Topic {
        tags: &["plt.kiwi"],
        months: &[1, 2, 3, 11, 12],
        regions: &["5101", "5106", "5118"],
        audience: &[],
        source: "四川省自然资源科学研究院",
        items: [
            (
                "猕猴桃溃疡病冬春防控",
                "冬剪后伤口涂药，发现菌脓及时刮治，严禁带病接穗。",
                "article",
            ),
            (
                "猕猴桃溃疡病识别挂图",
                "枝干流红褐色菌脓、叶片褐斑黄晕，一看就懂。",
                "image",
            ),
            (
                "猕猴桃人工授粉技术",
                "花期遇雨低温需人工授粉，提高坐果率和果形。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["plt.pepper"],
        months: &[3, 4, 5, 6, 7],
        regions: &["5134", "5132", "5114", "5118"],
        audience: &[],
        source: "汉源县农业农村局",
        items: [
            (
                "花椒蚜虫与锈病防治",
                "春季抽梢期防蚜虫，雨季前后防锈病，选用对路农药。",
                "article",
            ),
            (
                "花椒流胶病与天牛防治",
                "刮除病斑涂药，人工捕杀天牛成虫，虫孔注药。",
                "pdf",
            ),
            (
                "花椒采收与晾晒",
                "适时采收、阴干与烘干要点，保住麻味和色泽。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["plt.kiwi", "plt.citrus", "plt.fruit"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省农业科学院",
        items: [
            (
                "果园测土配方施肥",
                "看土施肥、少用化肥多用有机肥，果子更甜、树更健。",
                "article",
            ),
            (
                "果园生草与水肥一体化",
                "行间生草保水保土，滴灌施肥省工省水。",
                "pdf",
            ),
            ("果树嫁接技术图解", "切接、芽接步骤一图看懂。", "image"),
        ],
    },
    Topic {
        tags: &["plt.pesticide", "saf.pest_poison"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省农药检定所",
        items: [
            (
                "农药科学安全使用十不要",
                "不用禁限用农药、不超量、不混配乱用，守住安全间隔期。",
                "article",
            ),
            (
                "禁限用农药名录挂图",
                "哪些农药不能用在果树、茶叶、蔬菜上。",
                "image",
            ),
            (
                "农药误服中毒急救",
                "误服农药立即催吐、带上农药瓶送医。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["hlt.elderly"],
        months: &[],
        regions: &[],
        audience: &["age_60_69", "age_70_plus"],
        source: "四川省卫生健康委员会",
        items: [
            (
                "老年人防跌倒：家里这样改",
                "过道不堆杂物、厕所装扶手、夜里留盏灯。",
                "article",
            ),
            (
                "老年健康：合理用药八条",
                "按医嘱服药、不随意停药、不信偏方。",
                "pdf",
            ),
            (
                "老年人防跌倒广播",
                "起床三个半分钟，走路慢一点，鞋子要防滑。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["hlt.alone"],
        months: &[],
        regions: &[],
        audience: &["age_70_plus"],
        source: "四川省民政厅",
        items: [
            (
                "留守独居老人照护与安全",
                "邻里每天看一眼，留好子女和村干部电话。",
                "article",
            ),
            (
                "独居老人冬季安全提醒",
                "烤火防煤气中毒，天冷防感冒，按时吃药。",
                "audio",
            ),
            (
                "关爱留守老人联系卡",
                "紧急联系人、家庭医生、村医电话一卡写清。",
                "image",
            ),
        ],
    },
    Topic {
        tags: &["hlt.bp", "hlt.stroke"],
        months: &[],
        regions: &[],
        audience: &["age_60_69", "age_70_plus"],
        source: "四川大学华西医院",
        items: [
            (
                "高血压防治：少盐多动按时吃药",
                "每天盐不超过一啤酒瓶盖，降压药不能自己停。",
                "article",
            ),
            (
                "中风识别“BE FAST”口诀",
                "脸歪、手软、说话不清，马上打120。",
                "image",
            ),
            (
                "心梗急救常识",
                "胸口痛超过15分钟不缓解，立即拨打120。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["hlt.dm", "hlt.nutrition"],
        months: &[],
        regions: &[],
        audience: &["age_18_59", "age_60_69", "age_70_plus"],
        source: "四川省疾病预防控制中心",
        items: [
            (
                "糖尿病饮食与运动",
                "主食定量、粗细搭配、饭后走一走。",
                "article",
            ),
            (
                "腌腊制品少吃点",
                "腊肉香肠盐多，吃多了伤血压伤肾。",
                "image",
            ),
            ("减盐减油小窍门", "炒菜出锅前放盐，用控油壶。", "pdf"),
        ],
    },
    Topic {
        tags: &["saf.fraud"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省公安厅反诈中心",
        items: [
            (
                "防电信网络诈骗：这些电话直接挂",
                "自称公检法要转账、刷单返利、冒充客服退款，都是诈骗。",
                "article",
            ),
            (
                "反诈口诀挂图",
                "不听、不信、不转账，陌生链接不点开。",
                "image",
            ),
            (
                "反诈广播：冒充亲友借钱",
                "接到借钱电话，先打原号码核实。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["saf.fraud_old"],
        months: &[],
        regions: &[],
        audience: &["age_60_69", "age_70_plus"],
        source: "四川省市场监督管理局",
        items: [
            (
                "防养老、保健品诈骗",
                "免费体检、送鸡蛋、讲座卖“神药”，都是套路。",
                "article",
            ),
            (
                "保健品不是药",
                "保健品不能治病，不要停掉医生开的药。",
                "audio",
            ),
            (
                "以房养老骗局识别",
                "不在看不懂的合同上签字，房产证不交给外人。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["dig.phone", "dig.pay"],
        months: &[],
        regions: &[],
        audience: &["age_60_69", "age_70_plus"],
        source: "四川省科学技术协会",
        items: [
            (
                "智能手机入门：视频通话与健康码",
                "手把手教老人用微信视频、调大字体。",
                "article",
            ),
            (
                "手机支付安全五要点",
                "支付密码不告诉别人，验证码不给任何人。",
                "image",
            ),
            (
                "医保电子凭证怎么用",
                "看病买药亮码就行，家人也能帮忙绑定。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["dig.phone", "plt.citrus", "plt.kiwi"],
        months: &[10, 11, 12, 1],
        regions: &["5114", "5106", "5101"],
        audience: &["age_18_59"],
        source: "四川省商务厅",
        items: [
            (
                "农产品电商：柑橘网上怎么卖",
                "拍好照片、写清产地品种、发货防压防冻。",
                "article",
            ),
            (
                "直播卖货入门",
                "手机支架、自然光、讲清价格和售后。",
                "audio",
            ),
            (
                "电商包装与快递寄递",
                "泡沫网套、纸箱规格、生鲜快递怎么选。",
                "image",
            ),
        ],
    },
    Topic {
        tags: &["saf.geo", "saf.flood"],
        months: &[5, 6, 7, 8, 9],
        regions: &[],
        audience: &[],
        source: "四川省应急管理厅",
        items: [
            (
                "汛期滑坡泥石流避险",
                "听到山响、见到浑水，往两侧高处跑，不要顺沟跑。",
                "article",
            ),
            (
                "山洪来了怎么办",
                "暴雨时远离河道沟谷，听从村干部转移安排。",
                "audio",
            ),
            (
                "地灾隐患点撤离路线图",
                "认识撤离信号、避险点和撤离路线。",
                "image",
            ),
        ],
    },
    Topic {
        tags: &["saf.co", "saf.fire_home"],
        months: &[11, 12, 1, 2],
        regions: &[],
        audience: &[],
        source: "四川省消防救援总队",
        items: [
            (
                "烤火防煤气中毒",
                "烧炭烤火必须开窗通风，头晕恶心马上出门透气。",
                "article",
            ),
            (
                "冬季用火用电安全",
                "电热毯不过夜、插座不超载，出门断电。",
                "image",
            ),
            (
                "一氧化碳中毒急救",
                "迅速开窗、把人移到空气新鲜处，拨打120。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["saf.drown"],
        months: &[6, 7, 8],
        regions: &[],
        audience: &["age_6_14", "age_15_17"],
        source: "四川省教育厅",
        items: [
            (
                "暑假防溺水“六不”",
                "不私自下水游泳、不到无人看管的水域游泳。",
                "article",
            ),
            (
                "防溺水安全挂图",
                "同伴落水不手拉手救，大声呼救找大人。",
                "image",
            ),
            ("防溺水广播", "暑期每天村广播提醒，家长看好娃娃。", "audio"),
        ],
    },
    Topic {
        tags: &["liv.vaccine", "liv.cattle", "liv.sheep"],
        months: &[3, 4, 9, 10],
        regions: &[],
        audience: &[],
        source: "四川省动物疫病预防控制中心",
        items: [
            (
                "春防秋防：牲畜强制免疫",
                "口蹄疫、小反刍兽疫按时打疫苗，打完登记耳标。",
                "article",
            ),
            (
                "牛羊常见病识别",
                "不吃草、流口水、跛脚，及时报告兽医。",
                "pdf",
            ),
            (
                "强制免疫通知广播稿",
                "村里统一免疫时间和注意事项。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["liv.poultry"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省畜牧总站",
        items: [
            (
                "林下养鸡与禽流感防控",
                "散养也要圈养过夜，不和野鸟接触，病死禽深埋。",
                "article",
            ),
            ("家禽防疫时间表", "新城疫、禽流感疫苗什么时候打。", "image"),
            ("鸡鸭常见病防治", "看粪便、看精神，早发现早隔离。", "pdf"),
        ],
    },
    Topic {
        tags: &["eco.water", "eco.toilet"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省疾病预防控制中心",
        items: [
            (
                "井水泉水消毒与水窖清洗",
                "漂白粉用量、消毒时间和水窖每年清洗。",
                "article",
            ),
            (
                "卫生厕所使用与维护",
                "定期清掏、防冻防漏，粪污还田要腐熟。",
                "pdf",
            ),
            (
                "喝开水、不喝生水",
                "烧开的水最安全，雨后水浑更要注意。",
                "image",
            ),
        ],
    },
    Topic {
        tags: &["eco.straw", "saf.fire_wild"],
        months: &[2, 3, 4, 5, 9, 10],
        regions: &[],
        audience: &[],
        source: "四川省林业和草原局",
        items: [
            (
                "秸秆综合利用与禁烧",
                "秸秆还田、做饲料、做燃料，不焚烧。",
                "article",
            ),
            (
                "森林草原防火“十不准”",
                "上坟不烧纸、野外不用火，发现火情打12119。",
                "image",
            ),
            ("春季森林防火广播", "清明前后是防火关键期。", "audio"),
        ],
    },
    Topic {
        tags: &["hlt.infant", "hlt.leftchild"],
        months: &[],
        regions: &[],
        audience: &["age_0_5", "age_6_14"],
        source: "四川省妇幼保健院",
        items: [
            (
                "预防接种时间表",
                "宝宝出生后各针疫苗什么时候打，错过了怎么补。",
                "image",
            ),
            (
                "留守儿童心理关爱",
                "常打电话、多视频，关心娃娃在学校的事。",
                "article",
            ),
            (
                "婴幼儿辅食添加",
                "满6个月添加辅食，由少到多、由稀到稠。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["plt.fungi", "saf.mushroom"],
        months: &[6, 7, 8, 9],
        regions: &[],
        audience: &[],
        source: "四川省农业科学院",
        items: [
            (
                "野生菌中毒防范",
                "不认识的菌子不采、不买、不吃，吃后不适马上就医。",
                "article",
            ),
            (
                "常见毒菌识别挂图",
                "颜色鲜艳的不一定有毒，外观普通的也可能有毒。",
                "image",
            ),
            (
                "食用菌大棚栽培入门",
                "香菇、平菇、羊肚菌栽培季节和管理。",
                "pdf",
            ),
        ],
    },
    Topic {
        tags: &["plt.rice", "liv.fish"],
        months: &[4, 5, 6, 7],
        regions: &["5114", "5113", "5110"],
        audience: &[],
        source: "四川省农业技术推广总站",
        items: [
            (
                "稻渔综合种养：稻田养鱼养虾",
                "开沟起垄、防逃设施、少用农药。",
                "article",
            ),
            (
                "水稻二化螟与稻飞虱防治",
                "性诱剂诱杀，达到防治指标再用药。",
                "image",
            ),
            (
                "水稻旱育秧技术",
                "苗床准备、播种量、炼苗，培育壮秧。",
                "audio",
            ),
        ],
    },
    Topic {
        tags: &["saf.quake"],
        months: &[],
        regions: &[],
        audience: &[],
        source: "四川省地震局",
        items: [
            (
                "地震避险自救：伏地、遮挡、手抓牢",
                "震时就近躲避，震后有序撤离到空旷地带。",
                "article",
            ),
            (
                "家庭应急包清单",
                "水、食物、手电、药品、哨子，放在门口好拿的地方。",
                "image",
            ),
            (
                "地震应急广播演练稿",
                "村里组织避险演练的流程和分工。",
                "audio",
            ),
        ],
    },
];

/// A tiny deterministic PRNG (SplitMix64) so generated files need no dependency.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A Markdown article of a few paragraphs.
fn article(title: &str, summary: &str, source: &str, n: usize) -> Vec<u8> {
    let steps = ["第一步", "第二步", "第三步", "第四步"];
    let mut s = format!("# {title}\n\n> 来源：{source}　编号：seed-{n:03}\n\n{summary}\n\n");
    for (i, step) in steps.iter().enumerate() {
        s.push_str(&format!(
            "## {step}\n\n{summary}（要点 {}）村干部可在入户时对照讲解，拿不准的问题请咨询县农技站或村医。\n\n",
            i + 1
        ));
    }
    s.into_bytes()
}

/// An SVG poster with the title.
fn svg(title: &str, summary: &str, n: usize) -> Vec<u8> {
    let hue = (n * 47) % 360;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"480\" height=\"320\" viewBox=\"0 0 480 320\">\
<rect width=\"480\" height=\"320\" fill=\"hsl({hue},60%,92%)\"/>\
<rect x=\"12\" y=\"12\" width=\"456\" height=\"296\" fill=\"none\" stroke=\"hsl({hue},50%,40%)\" stroke-width=\"4\"/>\
<text x=\"240\" y=\"110\" font-size=\"26\" text-anchor=\"middle\" fill=\"hsl({hue},50%,25%)\">{}</text>\
<text x=\"240\" y=\"180\" font-size=\"14\" text-anchor=\"middle\">{}</text>\
<text x=\"240\" y=\"290\" font-size=\"12\" text-anchor=\"middle\">村云示例资源 seed-{n:03}</text></svg>\n",
        xml_escape(title),
        xml_escape(summary)
    )
    .into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A mono 8 kHz 8-bit WAV of about 0.75 s: a tone whose pitch depends on `n`, with a little noise.
fn wav(n: usize) -> Vec<u8> {
    const RATE: u32 = 8_000;
    const SAMPLES: u32 = 6_000;
    let freq = 220.0 + 20.0 * (n % 24) as f64;
    let mut rng = Mix(n as u64);
    let mut out = Vec::with_capacity(44 + SAMPLES as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + SAMPLES).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&RATE.to_le_bytes()); // byte rate
    out.extend_from_slice(&1u16.to_le_bytes()); // block align
    out.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&SAMPLES.to_le_bytes());
    for i in 0..SAMPLES {
        let t = f64::from(i) / f64::from(RATE);
        let tone = (t * freq * std::f64::consts::TAU).sin() * 90.0;
        let noise = (rng.next() % 9) as f64 - 4.0;
        out.push((128.0 + tone + noise).clamp(0.0, 255.0) as u8);
    }
    out
}

/// A one-page PDF (ASCII text: the standard fonts have no Chinese glyphs; the title is in the
/// metadata and the document info).
fn pdf(title: &str, n: usize) -> Vec<u8> {
    let text = format!("BT /F1 18 Tf 72 720 Td (Cunyun seed item {n:03}) Tj ET");
    let title_hex: String = title.encode_utf16().fold(String::from("FEFF"), |mut s, u| {
        s.push_str(&format!("{u:04X}"));
        s
    });
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{text}\nendstream", text.len() + 1),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        format!("<< /Title <{title_hex}> /Producer (cunyun demo) >>"),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// The seed library: every item of every topic, in a fixed order.
pub fn items() -> Vec<SeedItem> {
    let mut out = Vec::new();
    for topic in TOPICS {
        for (title, summary, format) in topic.items {
            let n = out.len() + 1;
            let (ext, file) = match format {
                "image" => ("svg", svg(title, summary, n)),
                "audio" => ("wav", wav(n)),
                "pdf" => ("pdf", pdf(title, n)),
                _ => ("md", article(title, summary, topic.source, n)),
            };
            // Reviewed within the last year or so; items stay valid for three years.
            let review_month = 1 + (n % 10);
            let meta = json!({
                "title": title,
                "summary": summary,
                "tags": topic.tags,
                "regions": topic.regions,
                "months": topic.months,
                "audience": topic.audience,
                "format": format,
                "source": topic.source,
                "review_date": format!("2026-{review_month:02}-{:02}", 1 + n % 27),
                "expires": format!("2029-{review_month:02}-01"),
            });
            out.push(SeedItem {
                file_name: format!("seed-{n:03}.{ext}"),
                meta,
                file,
            });
        }
    }
    out
}

/// Writes every item's file into `dir` and adds the item to `library`; returns how many were
/// added. Adding the seed library again updates the same items (ids come from the files).
pub fn add_to(library: &ContentLibrary, dir: &Path) -> Result<usize, SeedError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SeedError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let items = items();
    for item in &items {
        let path = dir.join(&item.file_name);
        std::fs::write(&path, &item.file).map_err(io(&path))?;
        library
            .add(&item.meta, &path, &BTreeMap::new())
            .map_err(|source| SeedError::Library {
                title: item.meta["title"].as_str().unwrap_or_default().to_string(),
                source,
            })?;
    }
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cunyun_protocol::library::ContentMeta;

    #[test]
    fn every_item_is_valid_unique_and_deterministic() {
        let a = items();
        assert!((60..=150).contains(&a.len()), "{} items", a.len());
        assert_eq!(a, items(), "same input, same bytes");
        let mut formats = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for item in &a {
            let mut meta = item.meta.clone();
            meta["bytes"] = Value::from(item.file.len());
            let parsed = ContentMeta::from_json(&meta)
                .unwrap_or_else(|e| panic!("{}: {e:?}", item.meta["title"]));
            formats.insert(parsed.format);
            assert!(
                hashes.insert(*blake3::hash(&item.file).as_bytes()),
                "duplicate file {}",
                item.file_name
            );
            assert!(item.file.len() < 16 * 1024, "{} too big", item.file_name);
        }
        assert_eq!(formats.len(), 4, "article, image, audio and PDF");
        let w = a
            .iter()
            .find(|i| i.file_name.ends_with(".wav"))
            .expect("wav");
        assert_eq!(&w.file[..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes([w.file[40], w.file[41], w.file[42], w.file[43]]) as usize,
            w.file.len() - 44
        );
        let p = a
            .iter()
            .find(|i| i.file_name.ends_with(".pdf"))
            .expect("pdf");
        assert!(p.file.starts_with(b"%PDF-1.4") && p.file.ends_with(b"%%EOF\n"));
    }

    #[test]
    fn adds_through_the_library_and_again_without_duplicates() {
        let root = tempfile::tempdir().expect("tempdir");
        let files = std::sync::Arc::new(
            cunyun_hub::files::HubFiles::open(&root.path().join("files")).expect("files"),
        );
        let lib = ContentLibrary::open(&root.path().join("lib"), files).expect("lib");
        let n = add_to(&lib, &root.path().join("seed")).expect("add");
        assert_eq!(lib.list().len(), n);
        add_to(&lib, &root.path().join("seed")).expect("again");
        assert_eq!(lib.list().len(), n);
    }
}
