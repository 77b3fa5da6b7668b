"""The benchmark behind ``make bench``: the product next to the limits of the machine it runs on."""
