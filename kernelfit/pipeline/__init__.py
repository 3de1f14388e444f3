"""One run, end to end, above the estimators: data -> features -> Plan -> fit -> record.

:mod:`.run` (``kernelfit run``), its planning (:mod:`.run_plan`), hold-out
selection of sigma / lam (:mod:`.select`, :mod:`.select_grid`), the results
store (:mod:`.results`), saved models (:mod:`.saved_model`, :mod:`.model_file`),
the run record and its tables (:mod:`.report`), and the explanations
(:mod:`.explain`, :mod:`.convergence`, :mod:`.cache_report`).
"""
