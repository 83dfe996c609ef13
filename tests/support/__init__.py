"""Helpers the tests import (not tests): tiny models, command lines, fake servers, literal references."""
