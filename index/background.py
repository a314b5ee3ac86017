"""A fixed background of generic passages, for stores too small to be their own.

Calibrated fusion reads a cosine against the query's background: its mean similarity to random
chunks of the store, and the spread of that. A store of a few chunks has no such background (the
relevant chunk is itself a third of it), so its best hit never stands out and kb declines
questions the store answers. In a store of fewer than `TINY` chunks, its own chunks are therefore
topped up with these passages, weighted to make up the rest of `SAMPLE`: a store of 3 chunks is
read against almost only them; a larger one against its own chunks only, as before (they are in
its language: the passages are English).

The passages are kb's own, short paragraphs on unrelated everyday and technical subjects, in the
register of notes and documentation. Their vectors are computed once per encoder and kept under
the store (`background.npz`, tagged with the encoder's key and a hash of the passages), written
atomically; a mismatched or damaged file is computed again.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.common import BROKEN_FILE, write_atomic

SAMPLE = 256  # store chunks read for the background; the passages make up the rest of it...
# ...in a store of fewer than TINY chunks only: one of 10 French notes under the English encoder
# must be read against its own chunks (the encoder puts all French text close together, and
# English passages would make its best hit stand out: tests/test_quality.py)
TINY = 8

PASSAGES = (
    "Tulips are planted in autumn, about three times as deep as the bulb is tall, so that the cold of winter can trigger their spring flowering.",
    "A sourdough loaf rises slowly because wild yeast works more gently than baker's yeast; an overnight rest in the fridge deepens its flavour.",
    "The invoice is due within thirty days of its date. Late payments are charged interest at the rate stated in the contract.",
    "To reset the router, hold the small button on its back for ten seconds until the lights flash, then wait two minutes for it to restart.",
    "The Amazon river carries more water than any other river on Earth, and its basin holds the largest tropical rainforest.",
    "Our weekly team meeting moves to Thursday afternoon. Please add agenda items to the shared document before Wednesday evening.",
    "A function that calls itself must have a base case; without one the recursion never ends and the program runs out of stack.",
    "Oil paint dries by oxidation rather than evaporation, which is why a thick layer can stay soft underneath for months.",
    "Wash the rice until the water runs clear, then simmer it covered with one and a half cups of water per cup of rice.",
    "The museum is closed on Mondays. Guided tours in English start at eleven and at three, and last about an hour.",
    "Glaciers move because ice deforms under its own weight; the fastest ones advance several metres a day.",
    "In chess, castling moves the king two squares towards a rook and places the rook on the square the king crossed.",
    "Set the thermostat a degree or two lower at night: most people sleep better in a cool room, and the heating bill falls.",
    "The library lends e-books for three weeks. A title that someone has reserved cannot be renewed.",
    "Bees communicate the direction of a food source with a waggle dance whose angle matches the sun's position.",
    "When the build fails on a missing header, install the development package of the library, which holds its include files.",
    "The marathon's route crosses four bridges and finishes in the park; water stations are placed every five kilometres.",
    "A mortgage with a fixed rate keeps the same monthly payment for its term, while a variable rate follows the central bank.",
    "Volcanic soil is often very fertile, which is why farms and villages cling to the slopes of active volcanoes.",
    "Before painting a wall, fill the cracks, sand the filler smooth and apply a coat of primer so the colour dries evenly.",
    "The quarterly report shows revenue up eight percent, driven by the new subscription plans in the European market.",
    "Owls can turn their heads about two hundred and seventy degrees because their necks have twice as many vertebrae as ours.",
    "The train to the airport runs every fifteen minutes from platform two; tickets must be validated before boarding.",
    "A violin's sound comes from the bow's horsehair gripping the string, helped by rosin that makes the hair sticky.",
    "Use a password manager and a different password for every site, so that one leaked password does not open the others.",
    "The Industrial Revolution began in Britain in the late eighteenth century with mechanised spinning and the steam engine.",
    "Children's fevers are usually a sign that the body is fighting an infection; see a doctor if one lasts more than three days.",
    "Configuration is read from the file in the home directory first, then from environment variables, which take precedence.",
    "Coral reefs are built by tiny animals that secrete limestone skeletons, and they shelter a quarter of all marine species.",
    "The recipe serves four: two onions, a tin of tomatoes, a clove of garlic, olive oil, basil and four hundred grams of pasta.",
    "Tennis scoring counts love, fifteen, thirty and forty; a game at forty-all, called deuce, needs two clear points to win.",
    "Pluto was reclassified as a dwarf planet in 2006 because it has not cleared its orbit of other objects.",
    "The lease may be ended with three months' written notice. The deposit is returned once the flat has been inspected.",
    "A good cover letter is short: say which job you want, why you fit it, and what you would bring to the team.",
    "The printer shows a paper jam: open the rear tray, pull the sheet out gently in the direction of the paper path, and close it.",
    "Salmon hatch in rivers, spend years at sea, and return to the stream of their birth to spawn, guided partly by smell.",
    "Compound interest means that interest is paid on earlier interest, so savings grow faster the longer they are left alone.",
    "The castle was rebuilt after a fire in the sixteenth century; only the chapel and the north tower are medieval.",
    "Knitting a scarf needs only the knit stitch: cast on thirty stitches and knit every row until it is long enough.",
    "Hurricanes form over warm ocean water, and they weaken quickly once they move over land or colder seas.",
    "Pull requests need one approving review and a green test run before they can be merged into the main branch.",
    "A balanced diet includes vegetables, fruit, whole grains and protein; processed sugar is best kept to a minimum.",
    "The moon always shows the same face to the Earth because its rotation is locked to its orbit.",
    "Photographs look sharper with a faster shutter speed; in low light, a tripod lets you keep the shutter open longer.",
    "The festival takes place every August in the old town, with street theatre, concerts and a lantern procession.",
    "Elephants recognise themselves in a mirror, one of the few animals known to pass this test of self-awareness.",
    "Bicycle tyres lose pressure over a few weeks; check them monthly and pump them to the pressure printed on the sidewall.",
    "The company's travel policy covers economy flights and hotels up to a nightly limit; receipts are needed for every expense.",
    "Earthquakes are measured on the moment magnitude scale, where each whole number means about thirty times more energy.",
    "Log files rotate daily and are kept for two weeks; older files are compressed and then deleted.",
    "The Great Barrier Reef stretches for more than two thousand kilometres along the coast of Queensland.",
    "Cats knead with their paws when they are content, a habit left over from nursing as kittens.",
    "To make a vinaigrette, whisk three parts oil with one part vinegar, a spoon of mustard, salt and pepper.",
    "The city council voted to extend the tram line to the hospital; construction is expected to take two years.",
    "Jazz grew out of blues and ragtime in New Orleans in the early twentieth century, with improvisation at its heart.",
    "Vaccination schedules for infants start at two months, with boosters in the second year and before school.",
    "The database is backed up every night at two; a restore to any point in the last week is possible from the logs.",
    "Sunflowers track the sun while they are young, turning east at dawn and west during the day.",
    "Keep receipts for large purchases until the warranty ends; many shops ask for the original proof of purchase.",
    "The Roman calendar was reformed by Julius Caesar, who added a leap day every four years.",
    "Houseplants need less water in winter, when they grow slowly; let the top of the soil dry out between waterings.",
    "Write commit messages in the imperative, with a short summary line and a body that explains why the change was made.",
    "Deserts can be cold: the Gobi drops far below freezing in winter, and Antarctica is the largest desert of all.",
    "Our office is on the third floor. Visitors sign in at reception and are given a badge for the day.",
    "The piano has eighty-eight keys, spanning a little over seven octaves from the lowest A to the highest C.",
    "Dogs should be walked at least twice a day; young and working breeds need more exercise and play.",
    "Inflation measures how quickly prices rise; central banks raise interest rates to slow it down.",
    "The hiking trail is marked with red and white stripes; allow five hours for the full loop and carry water.",
    "Ancient Egyptians wrote on papyrus made from reeds that grew along the Nile, pressed flat and dried in the sun.",
    "An API key should never be committed to the repository; keep it in an environment variable or a secrets store.",
    "Tea leaves are picked from the same plant for green and black tea; the difference lies in how they are processed.",
    "The school year starts in September; parents receive the timetable and the list of books in the last week of August.",
    "Lightning heats the air around it to about thirty thousand degrees, and the sudden expansion is the thunder we hear.",
    "Cast iron pans should be dried straight after washing and rubbed with a little oil so they do not rust.",
    "Football's offside rule stops attackers from waiting behind the defenders for a long pass.",
    "The warranty covers manufacturing faults for two years but not damage from drops, water or unauthorised repairs.",
    "Penguins live almost only in the southern hemisphere, from Antarctica to the Galapagos Islands on the equator.",
    "The spreadsheet totals each column automatically; add new rows above the total line so they are counted.",
    "Migrating birds navigate by the sun, the stars and the Earth's magnetic field, sometimes over thousands of kilometres.",
    "A haiku has three lines of five, seven and five syllables, and traditionally refers to a season.",
)
_TAG = hashlib.sha256("\n".join(PASSAGES).encode()).hexdigest()[:16]


def vectors(encoder, folder: Path) -> np.ndarray:
    """(len(PASSAGES), dims) float32: the passages embedded by `encoder`, cached in `folder`."""
    path = folder / "background.npz"
    tag = f"{encoder.key}:{_TAG}"
    try:
        with np.load(path) as z:
            if str(z["tag"]) == tag and z["vectors"].shape == (len(PASSAGES), encoder.dims):
                return z["vectors"]
    except BROKEN_FILE:
        pass  # absent, damaged or made by another encoder: embed again
    vecs = (encoder.embed_texts(list(PASSAGES)) if hasattr(encoder, "embed_texts") else
            encoder.embed_passages([encoder.tokenizer.encode(p).ids for p in PASSAGES])).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, vectors=vecs, tag=np.array(tag))
    try:
        write_atomic(path, buf.getvalue())
    except OSError:
        pass  # a read-only store: embed again next time
    return vecs


@dataclass(frozen=True)
class Background:
    """What a query's cosines are read against: `sample` (n, dims), up to SAMPLE random chunks of
    the store, and `passages` (len(PASSAGES), dims), together weighing SAMPLE - n (none from n = SAMPLE)."""

    sample: np.ndarray
    passages: np.ndarray

    @classmethod
    def load(cls, encoder, sample: np.ndarray, folder: Path) -> "Background":
        extra = vectors(encoder, folder) if len(sample) < TINY else np.zeros((0, encoder.dims), np.float32)
        return cls(sample, extra)

    def stats(self, q: np.ndarray) -> tuple[float, float]:
        """(mean, standard deviation) of the query vector's (dims,) similarities to the background."""
        n, rest = len(self.sample), max(SAMPLE - len(self.sample), 0)
        sims, w = self.sample @ q, np.ones(n)
        if rest and len(self.passages):
            sims = np.concatenate((sims, self.passages @ q))
            w = np.concatenate((w, np.full(len(self.passages), rest / len(self.passages))))
        if w.sum() == 0:
            return 0.0, 0.0
        mean = float(np.average(sims, weights=w))
        return mean, float(np.sqrt(np.average((sims - mean) ** 2, weights=w)))
