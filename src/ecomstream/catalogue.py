"""The default product category catalogue (contract §1); configurable where it is used."""

DEFAULT_CATEGORIES: tuple[str, ...] = (
    "Electronics",
    "Fashion",
    "Home & Kitchen",
    "Books",
    "Beauty",
    "Sports",
    "Toys",
    "Grocery",
)
