"""Tests of the MTA configuration emitters, validated by the real Exim and Postfix."""
