"""Pools the generator samples from, built once at start-up with a seeded Faker.

Faker is slow per call (a few µs per field), so it only fills pools here: customers (each with
a home location), products (a name that fits its category, a fixed price in that category's
range), and the weights that make the data look like a shop's: a few customers order often,
a few products sell most, quantities are mostly 1. Every pool entry is kept as a ready JSON
fragment, so an order is one string format away (see :mod:`ecomstream.producer.generator`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from faker import Faker

from ecomstream.catalogue import DEFAULT_CATEGORIES

CURRENCY = "USD"

# (city, state or region, ISO 3166-1 alpha-2, relative weight): real places whose parts belong
# together, weighted roughly like a US-centred shop's customers.
LOCATIONS: tuple[tuple[str, str, str, int], ...] = (
    ("New York", "NY", "US", 30),
    ("Los Angeles", "CA", "US", 22),
    ("Chicago", "IL", "US", 16),
    ("Houston", "TX", "US", 14),
    ("Phoenix", "AZ", "US", 10),
    ("Philadelphia", "PA", "US", 9),
    ("San Antonio", "TX", "US", 8),
    ("San Diego", "CA", "US", 8),
    ("Dallas", "TX", "US", 8),
    ("Austin", "TX", "US", 7),
    ("Seattle", "WA", "US", 7),
    ("Denver", "CO", "US", 6),
    ("Boston", "MA", "US", 6),
    ("Miami", "FL", "US", 6),
    ("Atlanta", "GA", "US", 6),
    ("San Francisco", "CA", "US", 6),
    ("Portland", "OR", "US", 4),
    ("Nashville", "TN", "US", 4),
    ("Minneapolis", "MN", "US", 4),
    ("Detroit", "MI", "US", 4),
    ("Toronto", "ON", "CA", 8),
    ("Vancouver", "BC", "CA", 5),
    ("Montreal", "QC", "CA", 5),
    ("Calgary", "AB", "CA", 3),
    ("London", "England", "GB", 10),
    ("Manchester", "England", "GB", 4),
    ("Edinburgh", "Scotland", "GB", 2),
    ("Cardiff", "Wales", "GB", 1),
    ("Berlin", "Berlin", "DE", 6),
    ("Munich", "Bavaria", "DE", 4),
    ("Hamburg", "Hamburg", "DE", 3),
    ("Paris", "Île-de-France", "FR", 6),
    ("Lyon", "Auvergne-Rhône-Alpes", "FR", 2),
    ("Madrid", "Community of Madrid", "ES", 4),
    ("Barcelona", "Catalonia", "ES", 4),
    ("Milan", "Lombardy", "IT", 3),
    ("Rome", "Lazio", "IT", 3),
    ("Amsterdam", "North Holland", "NL", 3),
    ("Stockholm", "Stockholm County", "SE", 2),
    ("Dublin", "Leinster", "IE", 2),
    ("Sydney", "New South Wales", "AU", 5),
    ("Melbourne", "Victoria", "AU", 5),
    ("Brisbane", "Queensland", "AU", 2),
    ("Auckland", "Auckland", "NZ", 2),
    ("Mumbai", "Maharashtra", "IN", 5),
    ("Bengaluru", "Karnataka", "IN", 5),
    ("Delhi", "Delhi", "IN", 5),
    ("Singapore", "Singapore", "SG", 3),
    ("Tokyo", "Tokyo", "JP", 5),
    ("Osaka", "Osaka", "JP", 2),
    ("São Paulo", "São Paulo", "BR", 4),
    ("Rio de Janeiro", "Rio de Janeiro", "BR", 2),
    ("Mexico City", "Mexico City", "MX", 4),
    ("Guadalajara", "Jalisco", "MX", 2),
)

# category -> (nouns that fit it, (lowest, highest) unit price in CURRENCY, popularity weight)
CATEGORY_SPECS: dict[str, tuple[tuple[str, ...], tuple[float, float], int]] = {
    "Electronics": (
        (
            "Wireless Earbuds",
            "Bluetooth Speaker",
            "4K Monitor",
            "Mechanical Keyboard",
            "USB-C Charger",
            "Smartwatch",
            "Noise-Cancelling Headphones",
            "Portable SSD",
            "Webcam",
            "Gaming Mouse",
            "Tablet",
            "Laptop",
            "Power Bank",
            "Smart Plug",
        ),
        (9.0, 1800.0),
        16,
    ),
    "Fashion": (
        (
            "Denim Jacket",
            "Running Sneakers",
            "Wool Scarf",
            "Leather Belt",
            "Linen Shirt",
            "Rain Jacket",
            "Chino Pants",
            "Ankle Boots",
            "Crossbody Bag",
            "Sunglasses",
            "Hooded Sweatshirt",
            "Summer Dress",
        ),
        (8.0, 350.0),
        18,
    ),
    "Home & Kitchen": (
        (
            "Chef's Knife",
            "Non-Stick Skillet",
            "French Press",
            "Cotton Bath Towel Set",
            "Stand Mixer",
            "Air Fryer",
            "Throw Blanket",
            "Cutting Board",
            "Table Lamp",
            "Storage Containers",
            "Duvet Cover",
            "Espresso Machine",
        ),
        (6.0, 600.0),
        15,
    ),
    "Books": ((), (4.0, 60.0), 12),  # titles come from Faker, see _product_name
    "Beauty": (
        (
            "Vitamin C Serum",
            "Hydrating Moisturizer",
            "Matte Lipstick",
            "Volumizing Mascara",
            "Sunscreen SPF 50",
            "Hair Dryer",
            "Shampoo",
            "Eau de Parfum",
            "Face Cleanser",
            "Nail Polish Set",
        ),
        (4.0, 180.0),
        10,
    ),
    "Sports": (
        (
            "Yoga Mat",
            "Adjustable Dumbbells",
            "Resistance Bands",
            "Trail Running Shoes",
            "Cycling Helmet",
            "Tennis Racket",
            "Water Bottle",
            "Camping Tent",
            "Fitness Tracker",
            "Foam Roller",
        ),
        (7.0, 900.0),
        9,
    ),
    "Toys": (
        (
            "Building Blocks Set",
            "Plush Bear",
            "Remote Control Car",
            "Jigsaw Puzzle",
            "Board Game",
            "Action Figure",
            "Art Kit",
            "Wooden Train Set",
            "Card Game",
            "Doll House",
        ),
        (5.0, 200.0),
        8,
    ),
    "Grocery": (
        (
            "Ground Coffee",
            "Green Tea",
            "Extra Virgin Olive Oil",
            "Dark Chocolate",
            "Granola",
            "Basmati Rice",
            "Pasta",
            "Honey",
            "Almonds",
            "Sparkling Water 12-Pack",
            "Maple Syrup",
        ),
        (1.5, 45.0),
        12,
    ),
}
# a category given with --categories that the table above does not know
GENERIC_SPEC: tuple[tuple[str, ...], tuple[float, float], int] = (
    ("Essentials Kit", "Starter Set", "Gift Box", "Accessory", "Refill Pack"),
    (5.0, 250.0),
    8,
)

_ADJECTIVES = (
    "Classic",
    "Pro",
    "Essential",
    "Premium",
    "Eco",
    "Compact",
    "Deluxe",
    "Ultra",
    "Everyday",
    "Signature",
    "Lite",
    "Max",
)
_BOOK_FORMATS = ("Paperback", "Hardcover", "Kindle Edition")

# (payment_method, weight)
PAYMENT_METHODS: tuple[tuple[str, int], ...] = (
    ("credit_card", 45),
    ("paypal", 20),
    ("debit_card", 20),
    ("gift_card", 5),
    ("cash_on_delivery", 4),
    ("apple_pay", 6),
)
# quantities skew to small numbers: P(q) roughly halves each step
QUANTITY_WEIGHTS: tuple[tuple[int, int], ...] = (
    (1, 560),
    (2, 220),
    (3, 100),
    (4, 50),
    (5, 30),
    (6, 15),
    (8, 10),
    (10, 8),
    (12, 4),
    (20, 3),
)

DEFAULT_CUSTOMERS = 20_000
PRODUCTS_PER_CATEGORY = 60


def _js(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class Product:
    product_id: str
    product_name: str
    category: str
    price: float


@dataclass(frozen=True)
class Customer:
    customer_id: str
    city: str
    state: str
    country: str


@dataclass(frozen=True)
class Catalog:
    """Everything an order is sampled from; ``*_fragments`` are ready JSON members."""

    categories: tuple[str, ...]
    customers: tuple[Customer, ...]
    customer_cum_weights: tuple[float, ...]
    products: tuple[Product, ...]
    product_cum_weights: tuple[float, ...]
    # '"customer_id":"..."' and '"city":"...","state":"...","country":"..."' per customer
    customer_fragments: tuple[str, ...]
    location_fragments: tuple[str, ...]
    # '"product_id":"...","product_name":"...","category":"...","price":12.99' per product
    product_fragments: tuple[str, ...]
    payment_fragments: tuple[str, ...]
    payment_cum_weights: tuple[int, ...]
    quantities: tuple[int, ...]
    quantity_cum_weights: tuple[int, ...]
    currency: str = CURRENCY


def _price(rng: random.Random, low: float, high: float) -> float:
    """Log-uniform in [low, high] (cheap things are more common), ending in .99/.49/.00/.95."""
    raw = math.exp(rng.uniform(math.log(low), math.log(high)))
    cents = rng.choice((0.99, 0.99, 0.49, 0.95, 0.0))
    value = max(math.floor(raw) + cents, low)
    return round(value if value > 0 else 0.99, 2)


def _product_name(fake: Faker, rng: random.Random, category: str, nouns: Sequence[str]) -> str:
    if category == "Books":
        return f"{fake.catch_phrase().title()} ({rng.choice(_BOOK_FORMATS)})"
    brand = fake.last_name()
    return f"{brand} {rng.choice(_ADJECTIVES)} {rng.choice(nouns)}"


def _zipf(n: int, s: float, offset: float) -> list[float]:
    return [1.0 / (rank + offset) ** s for rank in range(n)]


def build(
    seed: int,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    *,
    customers: int = DEFAULT_CUSTOMERS,
    products_per_category: int = PRODUCTS_PER_CATEGORY,
) -> Catalog:
    """The catalogue for ``seed``: the same seed always gives the same pools."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(f"catalog-{seed}")

    loc_weights = list(accumulate(w for *_, w in LOCATIONS))
    customer_list: list[Customer] = []
    seen: set[str] = set()
    while len(customer_list) < customers:
        customer_id = f"CUST-{rng.randrange(10**8):08d}"
        if customer_id in seen:
            continue
        seen.add(customer_id)
        city, state, country, _ = rng.choices(LOCATIONS, cum_weights=loc_weights)[0]
        customer_list.append(Customer(customer_id, city, state, country))
    # repeat customers: a long tail, with the most loyal ones ordering far more often
    customer_weights = list(accumulate(_zipf(customers, 0.9, 20.0)))

    product_list: list[Product] = []
    product_weights: list[float] = []
    for category in categories:
        nouns, (low, high), popularity = CATEGORY_SPECS.get(category, GENERIC_SPEC)
        names: set[str] = set()
        within = _zipf(products_per_category, 1.0, 3.0)
        total = sum(within)
        for i in range(products_per_category):
            name = _product_name(fake, rng, category, nouns)
            while name in names:
                name = _product_name(fake, rng, category, nouns)
            names.add(name)
            product_id = (
                f"PRD-{fake.unique.bothify('??-#####', letters='ABCDEFGHJKLMNPQRSTUVWXYZ')}"
            )
            product_list.append(Product(product_id, name, category, _price(rng, low, high)))
            product_weights.append(popularity * within[i] / total)

    return Catalog(
        categories=tuple(categories),
        customers=tuple(customer_list),
        customer_cum_weights=tuple(customer_weights),
        products=tuple(product_list),
        product_cum_weights=tuple(accumulate(product_weights)),
        customer_fragments=tuple(f'"customer_id":{_js(c.customer_id)}' for c in customer_list),
        location_fragments=tuple(
            f'"city":{_js(c.city)},"state":{_js(c.state)},"country":{_js(c.country)}'
            for c in customer_list
        ),
        product_fragments=tuple(
            f'"product_id":{_js(p.product_id)},"product_name":{_js(p.product_name)},'
            f'"category":{_js(p.category)},"price":{_js(p.price)}'
            for p in product_list
        ),
        payment_fragments=tuple(f'"payment_method":{_js(m)}' for m, _ in PAYMENT_METHODS),
        payment_cum_weights=tuple(accumulate(w for _, w in PAYMENT_METHODS)),
        quantities=tuple(q for q, _ in QUANTITY_WEIGHTS),
        quantity_cum_weights=tuple(accumulate(w for _, w in QUANTITY_WEIGHTS)),
    )
