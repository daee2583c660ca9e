"""Numbers as English words (num2words does the words; this module picks which reading)."""

from __future__ import annotations

from functools import lru_cache

from num2words import num2words as _num2words


@lru_cache(maxsize=4096)
def num2words(number: int, to: str = "cardinal") -> str:
    """num2words, remembered: replies repeat their numbers, and num2words is slow."""
    return _num2words(number, to=to)

# symbol or ISO code -> (one, many, hundredth one, hundredths); the names are what people say.
CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"), "USD": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"), "EUR": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"), "GBP": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""), "JPY": ("yen", "yen", "", ""),
    "CHF": ("franc", "francs", "centime", "centimes"), "CAD": ("Canadian dollar", "Canadian dollars", "cent", "cents"),
    "AUD": ("Australian dollar", "Australian dollars", "cent", "cents"), "INR": ("rupee", "rupees", "paisa", "paise"),
}
UNITS = {  # unit -> (one, many)
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "mi": ("mile", "miles"), "ft": ("foot", "feet"),
    "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "l": ("liter", "liters"), "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"),
    "°C": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "KB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"), "ms": ("millisecond", "milliseconds"), "s": ("second", "seconds"),
    "min": ("minute", "minutes"), "h": ("hour", "hours"), "hrs": ("hours", "hours"),
    "km/h": ("kilometer per hour", "kilometers per hour"), "mph": ("mile per hour", "miles per hour"),
    "kW": ("kilowatt", "kilowatts"), "kWh": ("kilowatt hour", "kilowatt hours"), "W": ("watt", "watts"),
    "V": ("volt", "volts"), "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"),
    "GHz": ("gigahertz", "gigahertz"), "px": ("pixel", "pixels"),
}


# English names, whatever the server's locale (calendar.month_name follows the locale and
# calls strftime on every lookup).
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_MONTH_BY_PREFIX = {name.lower()[:3]: name for name in MONTHS}

MAX_GROUPED_DIGITS = 15  # beyond this a number is read digit by digit


def _plain(number: str) -> str:
    return number.replace(",", "").replace("\u2212", "-")


@lru_cache(maxsize=4096)
def cardinal(number: str) -> str:
    """'1,234' -> 'one thousand, two hundred and thirty-four'; '3.14' -> 'three point one four'."""
    number = _plain(number)
    negative = number.startswith("-")
    number = number.lstrip("+-")
    whole, _, fraction = number.partition(".")
    if len(whole) > MAX_GROUPED_DIGITS:  # no one says a 40-digit number as a number
        return ("minus " if negative else "") + " ".join(num2words(int(digit)) for digit in whole + fraction)
    words = num2words(int(whole or "0"))
    if fraction:
        words += " point " + " ".join(num2words(int(digit)) for digit in fraction)
    return ("minus " if negative else "") + words


def is_one(number: str) -> bool:
    return _plain(number).lstrip("+") in ("1", "1.0")


def ordinal(number: str) -> str:
    return num2words(int(_plain(number)), to="ordinal")


def year(number: str) -> str:
    return num2words(int(number), to="year")


MAGNITUDES = {"thousand": "thousand", "k": "thousand", "K": "thousand", "million": "million", "M": "million",
              "billion": "billion", "bn": "billion", "B": "billion", "trillion": "trillion"}


def currency(unit: str, amount: str, magnitude: str | None = None) -> str:
    one, many, cent_one, cents = CURRENCIES[unit]
    if magnitude:  # "$4.5 billion": the amount is read as a number, the currency after
        return f"{cardinal(amount)} {MAGNITUDES[magnitude]} {many}"
    whole, _, fraction = _plain(amount).partition(".")
    value = int(whole or "0")
    words = f"{num2words(value)} {one if value == 1 else many}"
    if fraction and cent_one and int(fraction[:2].ljust(2, "0")):
        hundredths = int(fraction[:2].ljust(2, "0"))
        words += f" and {num2words(hundredths)} {cent_one if hundredths == 1 else cents}"
    elif fraction and not cent_one:
        words = f"{cardinal(amount)} {many}"
    return words


def unit(number: str, name: str) -> str:
    one, many = UNITS[name]
    return f"{cardinal(number)} {one if is_one(number) else many}"


def clock(hour: str, minute: str, meridiem: str | None) -> str:
    words = num2words(int(hour))
    if int(minute):
        words += " " + (f"oh {num2words(int(minute))}" if minute.startswith("0") else num2words(int(minute)))
    elif not meridiem:
        words += " hundred" if int(hour) > 12 or hour.startswith("0") else " o'clock"
    if meridiem:
        words += " " + " ".join(meridiem.lower().replace(".", ""))  # "p m"
    return words


def date(year_: str, month: str, day: str) -> str:
    return f"{MONTHS[int(month) - 1]} {ordinal(day)}, {year(year_)}"


def fraction(numerator: str, denominator: str) -> str:
    """'1/2' -> 'one half', '3/4' -> 'three quarters', '50/50' -> 'fifty fifty'."""
    top, bottom = int(numerator), int(denominator)
    if bottom == top or not 2 <= bottom <= 10:
        return f"{num2words(top)} {num2words(bottom)}" if bottom == top else f"{num2words(top)} over {num2words(bottom)}"
    name = {2: "half", 4: "quarter"}.get(bottom) or num2words(bottom, to="ordinal")
    if top != 1:
        name = "halves" if bottom == 2 else name + "s"
    return f"{num2words(top)} {name}"


def month_day(month: str, day: str, until: str | None = None) -> str:
    """'Dec 25' -> 'December twenty-fifth'; 'March 3-5' -> 'March third to fifth'."""
    words = f"{_MONTH_BY_PREFIX[month.lower()[:3]]} {ordinal(day)}"
    return words + (f" to {ordinal(until)}" if until else "")
