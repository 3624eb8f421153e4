//! The words the generator builds signals from: per niche, subjects, twists,
//! topics and communities. Order matters: Zipf draws favour the first entries.

pub struct Niche {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub twists: &'static [&'static str],
    pub topics: &'static [&'static str],
    pub communities: &'static [&'static str],
}

pub const NICHES: &[Niche] = &[
    Niche {
        name: "animals",
        subjects: &["cat", "dog", "corgi", "capybara", "raccoon", "goose", "axolotl", "otter", "hamster", "frog"],
        twists: &["wearing a tiny hat", "judging your life choices", "as a medieval knight", "doing yoga", "in a cozy sweater", "stealing snacks", "as a barista", "on a skateboard"],
        topics: &["cats", "dogs", "cuteanimals", "pets", "capybara", "wholesome", "frogs", "otters"],
        communities: &["r/aww", "r/cats", "r/rarepuppers", "#petsoftiktok", "r/capybara"],
    },
    Niche {
        name: "holidays",
        subjects: &["halloween pumpkin", "christmas tree", "valentine heart", "easter bunny", "thanksgiving turkey", "new year fireworks", "st patrick clover", "diwali lamp"],
        twists: &["with a retro twist", "in pixel art", "drawn as a cartoon", "as a minimalist poster", "with glitter lettering", "for the whole family"],
        topics: &["halloween", "christmas", "valentines", "easter", "thanksgiving", "newyear", "holidays", "diwali"],
        communities: &["r/halloween", "r/christmas", "#holidayvibes", "r/holidays"],
    },
    Niche {
        name: "nostalgia",
        subjects: &["90s cartoon", "retro video game", "vhs tape", "cassette player", "tamagotchi", "flip phone", "dial-up modem", "arcade cabinet"],
        twists: &["that defined a generation", "making a comeback", "as a vintage t-shirt", "in faded neon colors", "remembered by millennials", "turning 30 this year"],
        topics: &["nostalgia", "90s", "retro", "vintage", "80s", "millennials"],
        communities: &["r/nostalgia", "r/90s", "#retrogaming", "r/vintage"],
    },
    Niche {
        name: "gaming",
        subjects: &["speedrun", "boss fight", "indie game", "pixel dungeon", "controller", "loot box", "open world map", "respawn screen"],
        twists: &["with an impossible glitch", "as a funny meme", "that took 100 hours", "in a cozy style", "with a secret ending", "from a new patch"],
        topics: &["gaming", "videogames", "speedrun", "indiegames", "esports", "pixelart"],
        communities: &["r/gaming", "r/indiegames", "#gamertok", "r/speedrun"],
    },
    Niche {
        name: "sports",
        subjects: &["marathon runner", "basketball dunk", "soccer goal", "tennis serve", "climbing wall", "yoga pose", "skateboard trick", "surf wave"],
        twists: &["in the final second", "at the world championship", "that broke a record", "in slow motion", "by an underdog team", "on a rainy day"],
        topics: &["sports", "running", "basketball", "soccer", "fitness", "climbing"],
        communities: &["r/sports", "r/running", "#fittok", "r/nba"],
    },
    Niche {
        name: "food",
        subjects: &["sourdough bread", "ramen bowl", "taco", "avocado toast", "pancake stack", "sushi roll", "pizza slice", "boba tea"],
        twists: &["with a secret ingredient", "made in five minutes", "as cute kawaii art", "for a rainy sunday", "with extra cheese", "from grandma's recipe"],
        topics: &["food", "baking", "ramen", "foodie", "recipes", "coffee"],
        communities: &["r/food", "r/baking", "#foodtok", "r/cooking"],
    },
    Niche {
        name: "nature",
        subjects: &["mountain sunrise", "mushroom forest", "ocean wave", "wildflower field", "northern lights", "desert cactus", "rain forest", "autumn leaves"],
        twists: &["in watercolor", "on a foggy morning", "captured by a drone", "as a botanical print", "after the storm", "under a full moon"],
        topics: &["nature", "hiking", "mushrooms", "cottagecore", "camping", "plants"],
        communities: &["r/earthporn", "r/mycology", "#cottagecore", "r/hiking"],
    },
    Niche {
        name: "humor",
        subjects: &["office meeting", "monday morning", "coffee addiction", "group chat", "procrastination", "dad joke", "gym selfie", "online shopping cart"],
        twists: &["explained by a cat", "that went too far", "in one sentence", "as a motivational poster", "that everyone relates to", "at 3 am"],
        topics: &["funny", "memes", "relatable", "humor", "dadjokes", "sarcasm"],
        communities: &["r/funny", "r/memes", "#comedy", "r/dadjokes"],
    },
];

pub const OPENERS: &[&str] = &["", "", "", "Just saw ", "Everyone is talking about ", "Can't stop laughing at ", "New trend: ", "Idea: "];
pub const EMOJI: &[&str] = &["🔥", "😂", "✨", "🐱", "🎃", "💯", "😍", "🙌"];

/// Global calendar events the generator aligns themes with: (month, day, name, niche subject index).
pub const CALENDAR: &[(u32, u32, &str, &str)] = &[
    (2, 14, "Valentine's Day", "valentine heart"),
    (3, 17, "St. Patrick's Day", "st patrick clover"),
    (4, 20, "Easter", "easter bunny"),
    (10, 31, "Halloween", "halloween pumpkin"),
    (11, 27, "Thanksgiving", "thanksgiving turkey"),
    (12, 25, "Christmas", "christmas tree"),
    (12, 31, "New Year's Eve", "new year fireworks"),
    (11, 1, "Diwali", "diwali lamp"),
];
