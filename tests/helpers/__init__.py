"""Builders shared by the tests and benchmarks (not tests themselves): `demo_store.build_random_store`."""
