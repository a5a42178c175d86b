"""The general prompts of oikyo's shipped replay set, written by oikyo's authors (Apache-2.0 like oikyo).

:func:`prompts` returns about 300 varied user requests (explanations, advice, how-to, definitions,
comparisons, stories, poems, rewriting, lists, greetings, complaints, everyday questions), each with
the system prompt it is asked under (None for about a third, else one of :data:`SYSTEM_PROMPTS`),
in a fixed order. :mod:`oikyo.data.replay.build` answers them with the bundled base model.

They are written from templates over topic lists, so the set is easy to grow; they deliberately
avoid the forgetting probe's short-answer questions (arithmetic, capitals, unit conversions, simple
facts, spelling) so replay never trains on the probe (tests/data/test_replay_data.py checks it).
"""

from __future__ import annotations

import random

SYSTEM_SEED = 20261206

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a friendly and knowledgeable assistant. Answer clearly and concisely.",
    "You are a patient teacher who explains things in plain language.",
    "You are an assistant that gives practical, honest answers.",
)

EXPLAIN = ("how a rainbow forms", "why leaves change color in autumn", "how vaccines work",
           "how a thermometer works", "how a refrigerator keeps food cold", "why the ocean is salty",
           "how airplanes stay in the air", "what inflation is", "how the internet sends a message",
           "why we need sleep", "how a bicycle stays upright", "how plants drink water through their roots",
           "how recycling works", "why bread rises", "how a compass works", "what a budget is for",
           "how tides happen", "why exercise is good for the heart", "how a library organizes books",
           "what a volcano is", "how batteries store energy", "why some people are allergic to pollen",
           "how a credit score works", "what an ecosystem is", "how soap removes dirt")

ADVICE = ("staying focused while studying", "learning to swim as an adult", "saving money on groceries",
          "asking for a raise at work", "keeping a houseplant alive", "starting to run regularly",
          "making friends in a new city", "writing a clear email", "learning a new language",
          "dealing with stress at work", "organizing a small kitchen", "cooking for one person",
          "keeping a journal", "giving a short speech", "traveling with a small budget",
          "staying warm in winter", "reading more books", "taking care of a new puppy",
          "planning a picnic in the park", "being on time every morning", "drinking more water",
          "taking better photos with a phone", "reducing screen time", "studying for an exam",
          "keeping a tidy desk")

HOW_TO = ("iron a shirt", "tie a tie", "plant tomatoes in a garden", "make iced coffee at home",
          "clean a bicycle chain", "write a thank-you note", "clean a cast iron pan",
          "start a vegetable compost", "fold a shirt neatly", "make a simple salad dressing",
          "back up the photos on my computer", "set up a weekly meal plan", "wash a wool sweater",
          "make a paper airplane", "remove a coffee stain from a shirt", "pack a suitcase efficiently",
          "make pancakes from scratch", "hang a picture on a wall", "prepare for a long hike",
          "teach a dog to sit", "make a to-do list that works", "water succulents",
          "introduce myself at a meeting", "sharpen a kitchen knife safely", "build a simple birdhouse")

DEFINE = ("empathy", "nostalgia", "procrastination", "democracy", "metaphor", "gravity", "a habitat",
          "resilience", "an algorithm", "a mortgage", "curiosity", "a hypothesis", "erosion",
          "a carbon footprint", "irony", "a renewable resource", "etiquette", "a biography",
          "a deadline", "an introvert", "a thesaurus", "a telescope", "humility", "a recipe",
          "a glacier")

COMPARE = (("a virus", "a bacterium"), ("a sea", "an ocean"), ("a lake", "a pond"),
           ("baking", "roasting"), ("a frog", "a toad"), ("a novel", "a short story"),
           ("saving", "investing"), ("a hill", "a mountain"), ("jogging", "sprinting"),
           ("a cold", "the flu"), ("a poem", "a song"), ("a city", "a town"),
           ("renting a home", "buying a home"), ("coffee", "tea"), ("a laptop", "a desktop computer"),
           ("a crocodile", "an alligator"), ("a tornado", "a hurricane"), ("a fruit", "a vegetable"),
           ("a museum", "a gallery"), ("speaking", "listening"))

STORY = ("a lost kitten finding its way home", "a robot who learns to paint", "a girl who finds a secret door",
         "a lighthouse keeper on a stormy night", "two friends on a camping trip", "a dragon who is afraid of fire",
         "a baker who opens a shop in a small village", "a boy who can talk to birds",
         "a mouse living in a library", "an old man planting a tree", "a snowman who wants to see summer",
         "a child's first day at a new school", "a fox and a crow who become friends",
         "a sailor who finds a message in a bottle", "a garden that grows overnight",
         "a musician who loses her voice", "a clock that runs backwards", "a squirrel preparing for winter",
         "a kite that flies to the moon", "a family moving to a farm")

POEM = ("the sea", "a rainy afternoon", "friendship", "the first snow", "a busy city street",
        "the stars", "a cup of coffee", "autumn leaves", "a quiet morning", "a cat sleeping in the sun",
        "a mountain trail", "home")

REWRITE = (("more polite", "Give me the report now."),
           ("more polite", "Move your car, it is blocking my driveway."),
           ("more polite", "You forgot to call me back again."),
           ("more formal", "Hey, can you send me that file real quick?"),
           ("more formal", "Thanks a lot for the help yesterday, it was awesome."),
           ("more formal", "We can't make it to the meeting, sorry."),
           ("simpler", "The committee has reached a consensus regarding the forthcoming modifications."),
           ("simpler", "Precipitation is anticipated during the majority of the afternoon."),
           ("simpler", "The establishment will be closed for the duration of the holiday period."),
           ("more cheerful", "The party is on Saturday at six."),
           ("more cheerful", "The train was late, but we got there in the end."),
           ("shorter", "I wanted to let you know that I will not be able to attend the dinner on Friday "
                       "because I have to work late that evening."),
           ("shorter", "In my personal opinion, I think that the new park is a very nice place to go."),
           ("more friendly", "Your application has been received."),
           ("more friendly", "Please do not leave bags in the hallway."),
           ("more exciting", "The museum opens a new exhibition next week."),
           ("more exciting", "Our team won the game on Sunday."),
           ("more professional", "The printer is broken again and nobody fixed it."),
           ("more professional", "I need a day off next week."),
           ("clearer", "The thing with the meeting is that it might move, or not, depending."))

LISTS = ("five fruits that are high in vitamin C", "four ways to reuse a glass jar", "five things to learn in a weekend",
         "three reasons to learn to cook", "five things to bring to a picnic", "four board games for families",
         "five healthy breakfast ideas", "three ways to be kind to a neighbor", "five animals that live in the desert",
         "four ways to keep a room cool in summer", "five questions to ask at a job interview",
         "three easy stretches for the morning", "five things to do on a rainy day",
         "four ways to save electricity at home", "five birds that are common in gardens",
         "three benefits of walking", "five items for a first aid kit", "four musical instruments for beginners",
         "five ideas for a small garden", "three ways to practice gratitude", "five snacks for a long car trip",
         "four habits of good listeners", "five flowers that bloom in spring", "three ways to learn new words",
         "five things to check before a long drive")

GREETINGS = ("Hi there!", "Good morning! Ready for a new day?", "Hey, what's up?", "Hello! Nice to meet you.",
             "Good evening. Can you help me with something?", "Hi! I'm new here. What can you do?",
             "Hey there, how is your day going?", "Hello, friend!", "Good afternoon!",
             "Hi! Do you like puzzles?", "Greetings! I hope you are well.",
             "Hey! I just wanted to say thanks for your help earlier.", "Hello, is anyone there?",
             "Hi, I am bored. Can you suggest something fun?", "Good night! See you tomorrow.")

COMPLAINTS = ("my neighbor's dog barks every morning at five", "the bus was late three times this week",
              "my new shoes hurt my feet", "the restaurant got my order wrong twice",
              "my internet keeps disconnecting during video calls", "my coworker keeps taking credit for my work",
              "my landlord has not fixed the heating", "the gym is always too crowded after work",
              "my phone battery dies before lunch", "my flight was canceled at the last minute",
              "the elevator in my building is always out of order", "my roommate never does the dishes",
              "the line at the post office took an hour", "my washing machine makes a loud noise",
              "I was charged twice at the supermarket", "my train pass stopped working",
              "the hotel room was not cleaned", "my garden is full of snails",
              "my laptop is very slow in the mornings", "the parking lot at my building is always full")

WHY = ("Why do cats purr?", "Why is the sky darker in winter evenings?", "Why do onions make people cry?",
       "Why do we yawn?", "Why do some birds fly south for the winter?", "Why does ice float on water?",
       "Why do we get hiccups?", "Why do people have different accents?", "Why do dogs wag their tails?",
       "Why does popcorn pop?", "Why do stars twinkle?", "Why do we have leap years?",
       "Why do some fruits turn brown after being cut?", "Why do paper cuts hurt so much?",
       "Why does the moon look bigger near the horizon?", "Why do people enjoy scary movies?",
       "Why do babies sleep so much?", "Why do we dream?", "Why do bridges have gaps in them?",
       "Why does music give some people chills?", "Why are flamingos pink?",
       "Why do old books smell the way they do?", "Why do we get goosebumps?",
       "Why do some people sneeze when they look at the sun?", "Why do cities feel warmer than the countryside?")

EVERYDAY = ("What should I cook for dinner tonight if I only have rice, eggs and spinach?",
            "Is it better to study in the morning or at night?",
            "What is a good gift for a friend who loves gardening?",
            "How long should I rest between workouts?", "What can I do this weekend in a small town?",
            "Should I learn to play the guitar or the piano first?",
            "What is a polite way to decline an invitation?", "How can I tell if an avocado is ripe?",
            "What should I bring to a friend's housewarming?", "How often should I water a cactus?",
            "What is a good name for a goldfish?", "How can I make my small apartment feel bigger?",
            "What are good questions to ask on a first date?", "How do I know if I am drinking enough water?",
            "What is a fun game to play with two people and a deck of cards?",
            "What should I write in a birthday card for my grandmother?",
            "How can I keep my bread fresh for longer?", "Is it a good idea to take a nap in the afternoon?",
            "What is an easy dessert I can make without an oven?", "How can I remember people's names better?")

PARAGRAPH = ("the history of the bicycle", "why bees matter for farming", "a walk through a forest in spring",
             "the importance of public libraries", "what makes a good teacher", "life in a busy harbor town",
             "how people celebrated the new year long ago", "the joy of cooking with friends",
             "why maps are useful", "the sounds of a city at night", "the benefits of learning music",
             "what it is like to ride a train across the countryside", "the life of a honeybee colony",
             "how weather forecasts help farmers", "why people keep pets")


def _groups() -> list[tuple[str, list[str]]]:
    return [
        ("explain", [f"Can you explain {t} in simple terms?" for t in EXPLAIN]),
        ("advice", [f"What are some tips for {t}?" for t in ADVICE]),
        ("how-to", [f"How do I {t}?" for t in HOW_TO]),
        ("define", [f"What does {t} mean? Please give an example." for t in DEFINE]),
        ("compare", [f"What is the difference between {a} and {b}?" for a, b in COMPARE]),
        ("story", [f"Write a short story about {t}." for t in STORY]),
        ("poem", [f"Write a short poem about {t}." for t in POEM]),
        ("rewrite", [f"Rewrite this sentence to make it {how}: \"{text}\"" for how, text in REWRITE]),
        ("list", [f"List {t}." for t in LISTS]),
        ("greeting", list(GREETINGS)),
        ("complaint", [f"I am really annoyed: {t}. What should I do?" for t in COMPLAINTS]),
        ("why", list(WHY)),
        ("everyday", list(EVERYDAY)),
        ("paragraph", [f"Write a short paragraph about {t}." for t in PARAGRAPH]),
    ]


def prompts() -> list[dict]:
    """Every prompt as ``{"id", "category", "system", "prompt"}`` (system: None or a system prompt).

    A third of the prompts have no system prompt; the others get one of :data:`SYSTEM_PROMPTS`,
    drawn with a fixed seed, so the set (and its answers) is the same on every run.
    """
    rng = random.Random(SYSTEM_SEED)
    rows = []
    for category, texts in _groups():
        for k, text in enumerate(texts):
            system = None if rng.random() < 1 / 3 else rng.choice(SYSTEM_PROMPTS)
            rows.append({"id": f"{category}-{k + 1:02d}", "category": category, "system": system, "prompt": text})
    return rows
