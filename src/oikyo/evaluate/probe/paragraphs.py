"""The held-out general English text of the forgetting probe: 40 short paragraphs on everyday topics.

Written for oikyo (not taken from any corpus), so no model has seen them verbatim in training. A
fine-tuned model's perplexity on them, compared with its base model's, measures how much general
language modelling the fine-tuning gave up. :mod:`oikyo.evaluate.probe.build` writes them to
``text.jsonl``.
"""

PARAGRAPHS = (
    "A small garden can feed a family for much of the summer. Tomatoes and beans need a sunny spot and "
    "regular water, while lettuce prefers a little shade in the hottest weeks. Most gardeners learn that "
    "the soil matters more than the seeds: a handful of compost each spring keeps the ground loose and "
    "full of life.",
    "Bread is made from only a few ingredients, yet it rewards patience. Flour, water, salt and yeast are "
    "mixed into a dough that rests for hours while the yeast produces gas. Kneading builds a network of "
    "gluten that traps the bubbles, and a hot oven sets the crust before the loaf can collapse.",
    "Public libraries lend far more than books. Many of them offer quiet rooms for study, free internet "
    "access, language classes and story hours for young children. For people who cannot afford a computer "
    "at home, the library is often the only place where they can apply for a job online.",
    "Riding a bicycle to work saves money and time in crowded cities. A short trip of five kilometres "
    "takes about twenty minutes at an easy pace, which is often faster than a bus stuck in traffic. "
    "Riders who start cycling usually notice that they sleep better within a few weeks.",
    "Rivers shape the land they flow through. Over thousands of years, moving water carves valleys, "
    "carries sand toward the sea and builds wide plains where the current slows down. Those plains are "
    "fertile, which is why so many old towns grew up on the banks of a river.",
    "The moon has no light of its own. What we see at night is sunlight reflected from its grey, dusty "
    "surface. As the moon travels around the Earth, we see different portions of its lit side, which "
    "gives us the familiar cycle from a thin crescent to a full disc and back again.",
    "Long train journeys have a rhythm that flights cannot match. Passengers watch the countryside change "
    "slowly from fields to forests to small stations where nobody gets on. There is time to read, to talk "
    "with strangers, or simply to look out of the window and think.",
    "Learning a musical instrument takes steady practice rather than long sessions. Twenty minutes every "
    "day does more good than three hours once a week, because the hands and the ear improve through "
    "repetition. Teachers often suggest playing slowly at first and speeding up only when the notes are clean.",
    "A good night of sleep helps the body repair itself and the mind store what it learned during the day. "
    "Adults usually need between seven and nine hours. Dark rooms, cool air and a regular bedtime make it "
    "easier to fall asleep, while bright screens late in the evening tend to keep people awake.",
    "Volunteers keep many community events running. They set up chairs before a concert, serve soup at a "
    "winter shelter, and clean beaches after busy holidays. Most of them say they receive as much as they "
    "give, because helping others builds friendships and a sense of belonging.",
    "Honeybees live in colonies of thousands of workers and a single queen. The workers gather nectar and "
    "pollen from flowers, turn the nectar into honey and feed the young. While they collect food, they "
    "also carry pollen from plant to plant, which helps fruit trees and many crops produce their harvest.",
    "Cooking rice well is simpler than it seems. Rinse the grains until the water runs almost clear, use "
    "the right amount of water for the variety, and keep the lid closed while it steams. Letting the pot "
    "rest for ten minutes after cooking gives the grains time to finish softening.",
    "Mountains create their own weather. As moist air rises along a slope it cools, and the water it "
    "carries forms clouds and rain. The far side of the range is often much drier, because the air has "
    "already lost most of its moisture by the time it crosses the peaks.",
    "Walking is one of the easiest ways to stay healthy. It needs no equipment beyond comfortable shoes, "
    "and it can be done almost anywhere. A daily walk of half an hour strengthens the heart, lifts the "
    "mood and gives a chance to notice the neighbourhood in a way that driving never does.",
    "Old maps tell us as much about their makers as about the world. Empty regions were sometimes filled "
    "with drawings of sea monsters or imagined cities, and the country that paid for the map often sat "
    "at its centre. Comparing maps from different centuries shows how knowledge slowly spread.",
    "Recycling works best when items are clean and sorted correctly. A greasy pizza box or a bottle still "
    "half full of juice can spoil a whole batch of paper or plastic. Many towns publish simple guides, and "
    "reading one carefully once can save a lot of waste over the following years.",
    "Children learn language by listening long before they speak. In their first year they become "
    "sensitive to the sounds of the languages around them, and by the age of two many can combine words "
    "into short sentences. Reading aloud to them every day greatly enlarges their vocabulary.",
    "Markets in the early morning are full of activity. Farmers unload crates of apples and carrots, "
    "bakers arrange their loaves, and the first customers compare prices before the crowds arrive. Buying "
    "directly from growers lets shoppers ask how the food was produced and when it was picked.",
    "Lighthouses once guided every ship that approached a rocky coast. Each tower had its own pattern of "
    "flashes, so sailors could tell exactly where they were at night. Today satellites do most of that "
    "work, but many lighthouses still shine and some have become small museums.",
    "Writing a letter by hand feels different from sending a quick message. The writer slows down, chooses "
    "words with more care, and cannot delete a sentence without leaving a trace. People who receive such "
    "letters often keep them for years in a drawer or a shoebox.",
    "Forests store large amounts of carbon in their wood and soil. They also cool the air around them, "
    "hold rainwater that would otherwise rush away, and shelter countless animals and insects. Protecting "
    "old forests is usually easier and cheaper than trying to grow new ones from nothing.",
    "Chess is played on a board of sixty-four squares with sixteen pieces for each player. The rules can be "
    "learned in an afternoon, yet masters study the game for their whole lives. Beginners improve quickly "
    "by playing many short games and looking afterwards at the moves that lost material.",
    "A kitchen scale makes baking more reliable. Cups and spoons measure volume, and the same cup of flour "
    "can weigh quite different amounts depending on how tightly it is packed. Weighing ingredients gives "
    "the same result every time, which matters most for cakes and pastry.",
    "Snow falls when the air is cold enough for water vapour to freeze into crystals inside a cloud. Each "
    "flake grows as it falls, and its shape depends on the temperature and moisture it meets on the way "
    "down. Fresh snow is mostly air, which is why it muffles sound so well.",
    "Museums are not only for experts. A visit of an hour, focused on a single room, can be more rewarding "
    "than a tiring march through every gallery. Many museums offer free entry on certain days and short "
    "guided tours that explain the stories behind a few important objects.",
    "Drinking enough water matters more in hot weather and during exercise. Thirst is a useful signal, but "
    "older people sometimes feel it less strongly. Keeping a bottle nearby and drinking small amounts "
    "through the day is an easy habit that prevents headaches and tiredness.",
    "Bridges must carry their own weight as well as the traffic that crosses them. Engineers choose between "
    "arches, beams, suspension cables and other designs depending on the distance to span and the ground "
    "on each side. Wind and temperature changes also have to be taken into account.",
    "Keeping a simple budget helps people understand where their money goes. Writing down every expense "
    "for one month often reveals small costs that add up quickly, such as daily coffee or unused "
    "subscriptions. With that picture, it becomes easier to save for larger goals.",
    "Owls hunt mostly at night. Their large eyes gather what little light there is, and their hearing is so "
    "sharp that some species can catch a mouse moving under snow. Soft edges on their feathers let them "
    "fly almost silently, so their prey rarely hears them coming.",
    "Painting a room is a satisfying weekend project. Most of the work happens before the first brush "
    "stroke: moving furniture, filling small holes, cleaning the walls and covering the floor. Two thin "
    "coats of paint usually look better than one thick coat that drips.",
    "Tea has been drunk in China for thousands of years and later spread along trade routes to the rest of "
    "the world. Green, black and oolong teas all come from the same plant; the difference lies in how the "
    "leaves are dried and how long they are left to oxidise.",
    "A first aid kit at home should hold bandages, tape, scissors, a thermometer and any medicines the "
    "family uses regularly. It is worth checking the kit twice a year and replacing what has expired. "
    "Knowing where it is kept matters just as much as what it contains.",
    "Clouds come in many forms. High, thin clouds made of ice crystals look like strands of hair, while low "
    "grey layers can cover the whole sky for days. Tall towers of cloud that grow quickly on a summer "
    "afternoon often bring thunder and heavy showers by evening.",
    "Team sports teach lessons that last beyond the game. Players learn to share responsibility, to accept "
    "defeat without giving up, and to celebrate the success of others. Many adults say their closest "
    "friendships began on a school team or in a local club.",
    "Before printing was invented, every book had to be copied by hand. A single volume could take months "
    "to finish, so books were rare and expensive. The printing press made copies cheap and fast, and ideas "
    "began to travel much further than before.",
    "Cats sleep for a large part of the day, often twelve hours or more. They are most active at dawn and "
    "dusk, the times when their wild relatives hunt. A cat that brings a toy to its owner is usually "
    "asking to play, not simply showing off its catch.",
    "Saving energy at home can start with small changes. Turning off lights in empty rooms, washing clothes "
    "at lower temperatures and sealing gaps around windows all reduce the monthly bill. Larger steps, like "
    "better insulation, cost more at first but pay for themselves over time.",
    "Deserts are not empty places. Plants there store water in thick stems or send roots deep underground, "
    "and many animals stay hidden during the heat of the day. After a rare rain, a desert can bloom with "
    "flowers that appear and fade within a few weeks.",
    "Good conversation depends as much on listening as on speaking. Asking a follow-up question shows that "
    "the other person was heard, and a short pause before answering gives time to think. People tend to "
    "remember how a conversation made them feel more than the exact words used.",
    "Fresh fruit tastes best in its own season. Strawberries in early summer, plums in late summer and "
    "apples in autumn are sweeter and cheaper than those shipped from far away at other times of the year. "
    "Freezing or drying part of a good harvest keeps that flavour for the winter.",
)
