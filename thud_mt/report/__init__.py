"""Reports built from results files: leaderboards, failure categories, plots, JUnit properties, Allure."""
