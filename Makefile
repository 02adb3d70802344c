# The two commands of the README: `make demo` (the main job) and `make test`.
# Both install what they need into .venv first (scripts/setup.sh).
VENV := .venv/bin
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test bench bench-vs-hand bench-techniques bench-quantization bench-tables bench-in-context clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/edgecompress search examples/mnist1d.py:experiment --speedup 10 --trials 24 --workers 2 --storage sqlite:///demo.db
	$(VENV)/edgecompress front --study mnist1d --storage sqlite:///demo.db
	$(VENV)/edgecompress export --study mnist1d --storage sqlite:///demo.db --best -o out/model.onnx

test: setup
	$(VENV)/ruff check edgecompress tests examples bench
	$(VENV)/mypy
	$(VENV)/python -m pytest -q tests

bench: setup
	$(VENV)/python bench/demo_search.py

bench-vs-hand: setup
	$(VENV)/python bench/search_vs_hand.py --models cnn mlp uneven --arms hand allocate-drop --seeds 0 1 2 3 4 --trials 10
	$(VENV)/python bench/search_vs_hand.py --models cnn mlp uneven --arms allocate --seeds 0 1 2 --trials 10
	$(VENV)/python bench/search_vs_hand.py --models mobilenet --arms hand allocate --seeds 0 1 2 --trials 10
	$(VENV)/python bench/search_vs_hand.py --models signal --arms hand allocate allocate-drop --seeds 0 1 2 --trials 10
	$(VENV)/python bench/search_vs_hand.py --models resnet --arms hand allocate-drop --seeds 0 1 2 --trials 10
	$(VENV)/python bench/search_vs_hand.py --models cnn mlp uneven --arms tpe random --seeds 0 1 2 3 4 --trials 10

bench-techniques: setup
	$(VENV)/python bench/techniques.py --trials 24 --workers 2 --speedup 25

bench-quantization: setup
	$(VENV)/python bench/quantization.py --search-trials 20 --speedup 5

bench-tables: setup
	$(VENV)/python bench/latency_table.py --samples 50 --trials 24 --speedup 30

bench-in-context: setup
	$(VENV)/python bench/in_context.py --models 20 --worst 6

clean:
	rm -rf .venv demo.db demo.db.artifacts out
